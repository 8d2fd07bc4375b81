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


def field_section(fields):
    """A QPACK field section of (name, value) string pairs, each a literal
    with a literal name (no Huffman coding, no table), after a prefix that
    names no dynamic table entry."""
    out = b"\x00\x00"
    for name, value in fields:
        n, v = name.encode("latin-1"), value.encode("latin-1")
        out += prefix_int(0x20, 3, len(n)) + n + prefix_int(0, 7, len(v)) + v
    return out
