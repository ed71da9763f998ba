"""python -m psgd.compress: the table of every compressor (name, parameters, class, bits on the wire)."""

from __future__ import annotations

from psgd.compress import available


def main() -> None:
    rows = available()
    cols = [("name", "name"), ("params", "params"), ("class", "class"), ("bits", "bits on the wire")]
    cells = [[", ".join(r[k]) if isinstance(r[k], list) else str(r[k]) for k, _ in cols] for r in rows]
    widths = [max(len(t), *(len(c[i]) for c in cells)) for i, (_, t) in enumerate(cols)]
    print("  ".join(t.ljust(w) for (_, t), w in zip(cols, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
    print("\nspec strings: name:key=value,...  wrappers: per_layer(inner, layers=...), bucket(inner, size=5MiB),")
    print("scaled(inner). IDX = ceil(log2 d); B = number of blocks. Classes as in SPEC section 1.")


if __name__ == "__main__":
    main()
