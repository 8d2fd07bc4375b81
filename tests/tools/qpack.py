"""QPACK wire pieces for tests that write field sections and encoder
instructions by hand (RFC 9204)."""


def prefix_int(first, prefix_bits, n):
    """n as an integer with a prefix of prefix_bits bits (RFC 9204 4.1.1,
    RFC 7541 5.1), first supplying the byte's other bits."""
    top = (1 << prefix_bits) - 1
    if n < top:
        return bytes([first | n])
    out = [first | top]
    n -= top
    while n >= 128:
        out.append(0x80 | (n & 0x7f))
        n >>= 7
    out.append(n)
    return bytes(out)
