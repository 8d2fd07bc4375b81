#!/usr/bin/python3
"""gcmcode.py GCM_O: that gcm.c's code a CPU without AVX-512 runs has no
AVX-512 instruction in it, by objdump: every function of gcm.o but
seal_512 and open_512 (the AVX-512 path's runs) must have no EVEX-encoded
instruction (first opcode byte 0x62 after any prefixes) and name no zmm,
xmm16-31, ymm16-31 or opmask register. A CPU with VAES on 256-bit
registers but no AVX-512 would fault on one (SIGILL), and a test on a
host with AVX-512 cannot see it. seal_512 must have some: the check
finds them where they are.

Run by make unit; prints one closing line "N passed, N failed"."""
import re
import subprocess
import sys

AVX512_ONLY = ("seal_512", "open_512")
PREFIXES = {"66", "67", "f2", "f3", "2e", "3e", "26", "64", "65", "36", "f0"}
REGS = re.compile(r"%zmm\d|%[xy]mm(1[6-9]|2\d|3[01])\b|%k[0-7]\b")


def functions(obj):
    """{name: [(bytes, text)]} from objdump -d."""
    out = subprocess.run(["objdump", "-d", "-w", obj], check=True,
                         capture_output=True, text=True).stdout
    funcs, name = {}, None
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if m:
            name = m.group(1)
            funcs[name] = []
            continue
        m = re.match(r"^\s+[0-9a-f]+:\t((?:[0-9a-f]{2} )+)\s*\t(.*)$", line)
        if m and name is not None:
            funcs[name].append((m.group(1).split(), m.group(2)))
    return funcs


def avx512(insn):
    raw, text = insn
    i = 0
    while i < len(raw) and raw[i] in PREFIXES:
        i += 1
    return (i < len(raw) and raw[i] == "62") or REGS.search(text) is not None


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gcmcode.py GCM_O")
    passed = failed = 0
    funcs = functions(sys.argv[1])
    for name, insns in sorted(funcs.items()):
        bad = [i for i in insns if avx512(i)]
        if name.split(".")[0] in AVX512_ONLY:
            continue
        if bad:
            failed += 1
            print("%s: %d AVX-512 instructions in %s, such as %s" % (
                sys.argv[0], len(bad), name, bad[0][1]))
        else:
            passed += 1
    for name in AVX512_ONLY:
        if name in funcs and any(avx512(i) for i in funcs[name]):
            passed += 1
        else:
            failed += 1
            print("%s: %s missing, or found without AVX-512" % (
                sys.argv[0], name))
    for name in ("seal_256", "open_256", "key_lookup"):
        if name in funcs:
            passed += 1
        else:
            failed += 1
            print("%s: %s missing" % (sys.argv[0], name))
    print("%s: %d passed, %d failed" % (sys.argv[0], passed, failed))
    sys.exit(1 if failed else 0)


main()
