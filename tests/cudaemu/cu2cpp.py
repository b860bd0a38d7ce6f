#!/usr/bin/env python3
"""cu2cpp.py — turns a CUDA source (.cu, .cuh) into C++ that g++ compiles
against the stand-in headers of tests/cudaemu/include (run by CMake at build
time; Python 3 standard library only).

    cu2cpp.py [--no-warn] IN OUT

Three rewrites, nothing else (line numbers are kept, and a #line directive
names the original file, so diagnostics and __FILE__/__LINE__ point at it):

  * launches  KERNEL<<<grid, block[, smem[, stream]]>>>(args)
    become    ::ask_emu::make_launch(&KERNEL, "KERNEL", __FILE__, __LINE__,
                                     grid, block[, smem[, stream]])(args)
    KERNEL may be qualified (a::b) and carry template arguments (k<8, T>);
  * dynamic shared memory  extern __shared__ T name[];
    becomes   T *const name = (T *)::ask_emu::dyn_smem;  inside a function,
    or        static ::ask_emu::dyn_array<T> name;       at namespace scope;
  * inline PTX  asm [volatile] ("template" : outputs : inputs [: clobbers]);
    becomes C++ doing the same for the instructions kernels use for memory
    access: ld.* and st.* (any state space, cache and eviction qualifiers,
    .v2/.v4, address [%n] or [%n+imm], alignment checked), and nothing for
    prefetch.*, discard.*, fence.*, membar.*; griddepcontrol.wait becomes
    ::ask_emu::pdl_wait() (checked by the executor in launches made with
    make_launch_pdl), griddepcontrol.launch_dependents nothing (launches run
    one after another); any other instruction becomes a
    runtime failure of the launch that reaches it ("inline PTX not emulated"),
    so the build never breaks on it and the test names it. An asm in code
    the emulator's build never compiles (#ifndef ASK_CUDAEMU, the #else of
    #ifdef ASK_CUDAEMU or of #if defined(ASK_CUDAEMU) || ...) stays as it
    is.

Like nvcc, the output starts by including <cuda_runtime.h>. Comments and
string literals are never rewritten.
"""
import os
import re
import sys


def mask_code(src):
    """src with comments and string/char literals blanked (newlines kept)."""
    out = list(src)
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if src[k] != "\n":
                    out[k] = " "
            i = j
        elif c in "\"'":
            # a raw string R"d(...)d" is not expected in kernels; plain literals only
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            j = min(j + 1, n)
            for k in range(i + 1, j - 1):
                if src[k] != "\n":
                    out[k] = " "
            i = j
        else:
            i += 1
    return "".join(out)


def kernel_start(code, end):
    """Start of the kernel expression that ends at `end` (exclusive)."""
    i = end
    while i > 0 and code[i - 1].isspace():
        i -= 1
    while True:
        if i > 0 and code[i - 1] == ">":  # template arguments
            depth, j = 0, i - 1
            while j >= 0:
                if code[j] == ">":
                    depth += 1
                elif code[j] == "<":
                    depth -= 1
                    if depth == 0:
                        break
                j -= 1
            if j < 0:
                raise ValueError("unbalanced template arguments before <<<")
            i = j
            while i > 0 and code[i - 1].isspace():
                i -= 1
        j = i
        while j > 0 and (code[j - 1].isalnum() or code[j - 1] == "_"):
            j -= 1
        if j == i:
            raise ValueError("no kernel name before <<<")
        i = j
        k = i
        while k > 0 and code[k - 1].isspace():
            k -= 1
        if k >= 2 and code[k - 2:k] == "::":
            i = k - 2
            while i > 0 and code[i - 1].isspace():
                i -= 1
            if i == 0 or not (code[i - 1].isalnum() or code[i - 1] in "_>"):
                return i  # a leading :: (global scope)
            continue
        return i


def rewrite_launches(src, code):
    out, pos = [], 0
    for m in re.finditer(r"<<<", code):
        p = m.start()
        if p < pos:
            continue
        q = code.find(">>>", p + 3)
        if q < 0:
            raise ValueError("<<< without >>> at offset %d" % p)
        s = kernel_start(code, p)
        kernel = src[s:p].strip()
        config = src[p + 3:q]
        name = re.sub(r"\s+", " ", kernel).replace("\\", "\\\\").replace('"', '\\"')
        out.append(src[pos:s])
        out.append('::ask_emu::make_launch(&%s, "%s", __FILE__, __LINE__, %s)'
                   % (kernel, name, config))
        pos = q + 3
    out.append(src[pos:])
    return "".join(out)


def brace_depths(src, code):
    """For each offset, the number of enclosing braces that are not namespace
    or extern "C" blocks (0: namespace scope)."""
    depth = [0] * (len(code) + 1)
    stack, d = [], 0
    for i, c in enumerate(code):
        depth[i] = d
        if c == "{":
            before = src[max(0, i - 200):i]
            ns = re.search(r'(\bnamespace\b[\w\s:]*|\bextern\s*"C(\+\+)?"\s*)$', before) is not None
            stack.append(ns)
            if not ns:
                d += 1
        elif c == "}" and stack:
            if not stack.pop():
                d -= 1
    depth[len(code)] = d
    return depth


EXTERN_SHARED = re.compile(r"\bextern\s+__shared__\s+([^;{}()\[\]]*(?:\([^;{}]*?\)[^;{}()\[\]]*)*?)"
                           r"\b([A-Za-z_]\w*)\s*\[\s*\]\s*;")


def rewrite_extern_shared(src, code):
    depth = brace_depths(src, code)
    out, pos = [], 0
    for m in EXTERN_SHARED.finditer(code):
        ty = src[m.start(1):m.end(1)]
        ty = re.sub(r"__align__\s*\(\s*\w+\s*\)|alignas\s*\(\s*\w+\s*\)|"
                    r"__attribute__\s*\(\(.*?\)\)", " ", ty)
        ty = " ".join(ty.split())
        name = m.group(2)
        out.append(src[pos:m.start()])
        if depth[m.start()] > 0:
            out.append("%s *const %s = (%s *)::ask_emu::dyn_smem;" % (ty, name, ty))
        else:
            out.append("static ::ask_emu::dyn_array<%s> %s;" % (ty, name))
        # keep the line count: the match may span lines
        out.append("\n" * src[m.start():m.end()].count("\n"))
        pos = m.end()
    out.append(src[pos:])
    return "".join(out)


def split_top(text, code, sep):
    """Splits text at the occurrences of sep in code (its masked twin) that are
    outside parentheses/brackets/braces; for ':' a '::' followed by a name is a
    scope operator, any other '::' two separators (asm("..." :: "r"(x)))."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(code):
        c = code[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == sep and depth == 0:
            if sep == ":" and code[i + 1:i + 2] == ":":
                rest = code[i + 2:].lstrip()
                if rest[:1].isalnum() or rest[:1] == "_":  # a scope operator: a::b, ::b
                    i += 2
                    continue
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


PTX_SIZES = {"8": 1, "16": 2, "32": 4, "64": 8, "128": 16}


def ptx_to_cpp(template, outs, ins):
    """C++ statements doing what the PTX template does, or raises ValueError."""
    ops = outs + ins
    code = []

    def operand(tok):
        tok = tok.strip()
        m = re.fullmatch(r"%(\d+)", tok)
        if not m or int(m.group(1)) >= len(ops):
            raise ValueError("operand %r" % tok)
        return "(" + ops[int(m.group(1))] + ")"

    for ins_text in re.split(r"[;\n]", template):
        ins_text = ins_text.strip()
        if not ins_text:
            continue
        m = re.match(r"([a-z][\w.:]*)\s*(.*)$", ins_text)
        if not m:
            raise ValueError(ins_text)
        opc, args = m.group(1), m.group(2)
        parts = opc.split(".")
        if parts[0] in ("prefetch", "prefetchu", "discard", "fence", "membar", "applypriority",
                        "createpolicy"):
            continue
        if opc == "griddepcontrol.wait":  # programmatic dependent launch
            code.append(" ::ask_emu::pdl_wait();")
            continue
        if opc == "griddepcontrol.launch_dependents":
            continue
        if parts[0] in ("ld", "st"):
            vec = 1
            for p in parts:
                if p in ("v2", "v4", "v8"):
                    vec = int(p[1:])
            size = None
            for p in reversed(parts):
                m2 = re.fullmatch(r"[busf](8|16|32|64|128)", p)
                if m2:
                    size = PTX_SIZES[m2.group(1)]
                    break
            if size is None:
                raise ValueError(ins_text)
            am = re.search(r"\[\s*(%\d+)\s*(?:\+\s*(-?\w+))?\s*\]", args)
            if not am:
                raise ValueError(ins_text)
            addr = operand(am.group(1))
            off = am.group(2) or "0"
            rest = (args[:am.start()] + args[am.end():]).strip().strip(",").strip()
            regs = [r for r in re.split(r"[{},\s]+", rest) if r]
            if len(regs) != vec:
                raise ValueError(ins_text)
            code.append("{ unsigned char *ask__a = (unsigned char *)(uintptr_t)%s + (%s); "
                        "::ask_emu::check_align(ask__a, %d, \"%s\");"
                        % (addr, off, size * vec, opc))
            for k, r in enumerate(regs):
                if parts[0] == "ld":
                    code.append(" ::ask_emu::ptx_set(%s, ::ask_emu::ptx_load(ask__a + %d, %d));"
                                % (operand(r), k * size, size))
                else:
                    code.append(" ::ask_emu::ptx_store(ask__a + %d, %d, ::ask_emu::bits_of(%s));"
                                % (k * size, size, operand(r)))
            code.append(" }")
            continue
        if parts[0] == "mov" and len(parts) == 2:
            d, s_ = [a.strip() for a in args.split(",")]
            code.append(" ::ask_emu::ptx_set(%s, ::ask_emu::bits_of(%s));"
                        % (operand(d), operand(s_)))
            continue
        raise ValueError(ins_text)
    return "".join(code)


ASM_START = re.compile(r"\b(?:asm|__asm__|__asm)\s*(?:volatile\s*|__volatile__\s*)?\(")
EMU_IF = re.compile(r"if\s+defined\s*\(?\s*ASK_CUDAEMU\s*\)?\s*(?:\|\||$)")


def emu_dead(code):
    """Offsets [a, b) of code that the emulator's build never compiles: the
    body of #ifndef ASK_CUDAEMU, and the #else part of #ifdef ASK_CUDAEMU
    or of #if defined(ASK_CUDAEMU) || ... (other conditions: unknown, kept)."""
    spans, stack, off = [], [], 0  # stack: [kind, start of a dead part or -1]
    for line in code.splitlines(True):
        t = line.strip()
        if t.startswith("#"):
            d = re.sub(r"^#\s*", "", t)
            if d.startswith("if"):
                kind = ("skip" if re.match(r"ifndef\s+ASK_CUDAEMU\b", d)
                        else "take" if re.match(r"ifdef\s+ASK_CUDAEMU\b", d) or EMU_IF.match(d)
                        else "other")
                stack.append([kind, off + len(line) if kind == "skip" else -1])
            elif d.startswith("el") and stack:
                top = stack[-1]
                if top[1] >= 0:
                    spans.append((top[1], off))
                top[1] = off + len(line) if top[0] == "take" and d.startswith("else") else -1
                top[0] = "other"
            elif d.startswith("endif") and stack:
                top = stack.pop()
                if top[1] >= 0:
                    spans.append((top[1], off))
        off += len(line)
    return spans


def rewrite_asm(src, code):
    out, pos = [], 0
    dead = emu_dead(code)
    for m in ASM_START.finditer(code):
        if m.start() < pos or any(a <= m.start() < b for a, b in dead):
            continue  # (an asm the emulator's build never compiles stays as it is)
        depth, i = 0, m.end() - 1
        while i < len(code):
            if code[i] == "(":
                depth += 1
            elif code[i] == ")":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        inner, inner_code = src[m.end():i], code[m.end():i]
        sections = split_top(inner, inner_code, ":")
        codes = split_top(inner_code, inner_code, ":")
        template = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', sections[0]))
        template = template.replace("\\n", "\n").replace("\\t", " ")

        def operands(k):
            if k >= len(sections) or not sections[k].strip():
                return []
            res = []
            for op in split_top(sections[k], codes[k], ","):
                om = re.match(r'\s*(?:\[\w+\]\s*)?"[^"]*"\s*\((.*)\)\s*$', op, re.S)
                if not om:
                    raise ValueError("asm operand %r" % op)
                res.append(om.group(1))
            return res

        try:
            cpp = ptx_to_cpp(template, operands(1), operands(2))
        except ValueError as e:
            msg = " ".join(template.split()).replace("\\", "\\\\").replace('"', '\\"')
            cpp = '::ask_emu::fail("%%s", "inline PTX not emulated by cudaemu: %s");' % msg
            if WARN:
                sys.stderr.write("cu2cpp: warning: %s: inline PTX not emulated (%s): %s\n"
                                 % (PATH, e, msg))
        out.append(src[pos:m.start()])
        out.append("[&]() { %s }()" % cpp)
        out.append("\n" * src[m.start():i + 1].count("\n"))
        pos = i + 1
    out.append(src[pos:])
    return "".join(out)


def transform(src, path):
    src = rewrite_asm(src, mask_code(src))
    src = rewrite_extern_shared(src, mask_code(src))
    src = rewrite_launches(src, mask_code(src))
    return '#include <cuda_runtime.h>\n#line 1 "%s"\n%s' % (path.replace("\\", "/"), src)


WARN, PATH = True, ""


def main():
    global WARN, PATH
    args = sys.argv[1:]
    if args[:1] == ["--no-warn"]:  # (selftest.cu: its unemulated PTX is on purpose)
        WARN, args = False, args[1:]
    if len(args) != 2:
        sys.stderr.write("usage: cu2cpp.py [--no-warn] IN OUT\n")
        return 2
    inp, outp = args
    PATH = inp
    with open(inp, encoding="utf-8") as f:
        src = f.read()
    try:
        res = transform(src, inp)
    except ValueError as e:
        sys.stderr.write("%s: %s\n" % (inp, e))
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(outp)), exist_ok=True)
    tmp = outp + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(res)
    os.replace(tmp, outp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
