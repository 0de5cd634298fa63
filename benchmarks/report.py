"""Tables (terminal and Markdown) and the PNG plot of a results document."""

from __future__ import annotations

from cases import NOT_COMPILED, NOT_COMPILED_JAX, NOT_HAND
from configs import ATTN_VARIANTS

__all__ = ["machine_lines", "markdown", "not_measured", "plot", "result_rows", "target_rows",
           "text_table"]

MiB = 2**20
_VARIANT_ORDER = (*ATTN_VARIANTS, "bare")
_HEAD = ("backend", "configuration", "variant", "time", "GFLOP/s", "x kernel", "paired",
         "% matmul", "faults", "extra MiB")
# n/a for a reason that never changes: not worth a table row.
_STRUCTURAL = ("the framework has no attention kernel", "bare expression is NumPy only",
               NOT_COMPILED, NOT_COMPILED_JAX, NOT_HAND)


def _time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def result_rows(doc: dict) -> list[tuple[str, ...]]:
    """One row per (backend, configuration, variant) measured; n/a ones go to
    :func:`not_measured`."""
    rows = []
    for r in doc["results"]:
        for name in _VARIANT_ORDER:
            v = r["variants"].get(name)
            if v is None or v["status"] == "n/a":
                continue
            mem = v.get("memory") or {}
            peak = (f"{mem['peak_extra_bytes'] / MiB:.1f}" if mem.get("status") == "ok"
                    else mem.get("status", ""))
            if v["status"] != "ok":
                if mem.get("status") == "ok":  # memory-only rows: time from the child
                    rows.append((r["backend"], r["label"], name, _time(mem["seconds"]),
                                 f"{r['flop'] / mem['seconds'] / 1e9:.1f}", "", "", "", "", peak))
                    continue
                why = v.get("reason") or mem.get("reason", "")
                rows.append((r["backend"], r["label"], name, v["status"], "", "", "", "", "",
                             f"{why[:70]}"))
                continue
            ratio = v.get("ratio_to_kernel")
            frac = v.get("fraction_of_matmul")
            faults = v.get("minor_faults_per_call")
            pair = v.get("paired") or {}
            paired = (f"{pair['ratio_to_kernel']:.2f}" if pair.get("status") == "ok"
                      else pair.get("status", ""))
            rows.append((
                r["backend"], r["label"], name, _time(v["time_s"]),
                f"{v['gflops']:.1f}" if v.get("gflops") is not None else "",
                f"{ratio:.2f}" if ratio is not None else "",
                paired,
                f"{100 * frac:.0f}%" if frac is not None else "",
                f"{faults:.0f}" if faults is not None else "",
                peak,
            ))
    return rows


def not_measured(doc: dict) -> list[str]:
    """``variant on backends: reason`` for every variant that could not be measured."""
    seen: dict[tuple[str, str], list[str]] = {}
    for r in doc["results"]:
        for name, v in r["variants"].items():
            if v["status"] == "n/a" and v.get("reason") not in _STRUCTURAL:
                backends = seen.setdefault((name, v.get("reason", "")), [])
                if r["backend"] not in backends:
                    backends.append(r["backend"])
    lines = [f"{name} on {', '.join(b)}: {why}" for (name, why), b in seen.items()]
    for r in doc["results"]:
        for name, v in r["variants"].items():
            pair = v.get("paired") or {}
            if pair.get("status") == "error":
                lines.append(f"paired ratio of {name} on {r['backend']} {r['label']}: "
                             f"{pair.get('reason', '')}")
    lines += [f"{b}: {why}" for b, why in doc.get("backends_skipped", {}).items()]
    return lines


def target_rows(doc: dict) -> list[tuple[str, ...]]:
    rows = []
    for t in doc["targets"]:
        measured = t.get("measured_text") or "-"
        where = t.get("worst_config") or t.get("note", "")
        if t.get("of"):
            where = f"worst of {t['of']}: {where} ({t['passed']}/{t['of']} pass)"
            if t.get("note"):
                where += f"; {t['note']}"
        rows.append((t["id"], t["threshold"], measured, t["status"], where))
    return rows


def machine_lines(doc: dict) -> list[str]:
    m = doc["machine"]
    lines = []
    for name, rate in m["matmul"].items():
        if rate.get("status") == "ok":
            lines.append(f"matmul fp32 {rate['n']}x{rate['n']} on {name}: "
                         f"{rate['gflops']:.1f} GFLOP/s")
    for name, rate in m["memcpy"].items():
        if rate.get("status") == "ok":
            lines.append(f"memcpy {rate['nbytes'] / MiB:.0f} MiB on {name}: "
                         f"{rate['bytes_per_s'] / 1e9:.1f} GB/s")
    for dev in ("cpu", "cuda"):
        if m.get(f"matmul_{dev}_gflops"):
            lines.append(f"machine {dev} matmul rate used for '% matmul': "
                         f"{m[f'matmul_{dev}_gflops']:.1f} GFLOP/s")
    return lines


def _format(head, rows, sep="  ") -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    line = sep.join(str(h).ljust(w) for h, w in zip(head, widths, strict=True))
    out = [line, sep.join("-" * w for w in widths)]
    out += [sep.join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def text_table(doc: dict) -> str:
    parts = ["", "== machine", *machine_lines(doc), "", "== attention",
             _format(_HEAD, result_rows(doc)),
             *[f"not measured: {line}" for line in not_measured(doc)], "", "== targets",
             _format(("target", "threshold", "measured", "status", "where"), target_rows(doc))]
    return "\n".join(parts)


def _md(head, rows) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(x).replace("|", "/") for x in r) + " |" for r in rows]
    return "\n".join(out)


def markdown(doc: dict) -> str:
    c = doc["conditions"]
    parts = [
        f"Command: `{doc['command']}` ({doc['mode']} mode, {doc['duration_s']:.0f} s, "
        f"statistic: {doc['stat']} over rounds)",
        "",
        f"Machine: {c['cpu_model']}, {c['cpu_count']} cores, "
        f"{c['mem_total_bytes'] / 2**30:.0f} GiB; Python {c['python']}; "
        + ", ".join(f"{k} {v}" for k, v in c["versions"].items()) + "; "
        f"load average {c['loadavg_start']} at start, {c['loadavg_end']} at end.",
        "",
        *[f"- {line}" for line in machine_lines(doc)],
        "",
        _md(_HEAD, result_rows(doc)),
        "",
        *[f"Not measured: {line}.  " for line in not_measured(doc)],
        "",
        _md(("target", "threshold", "measured", "status", "where"), target_rows(doc)),
    ]
    return "\n".join(parts)


def plot(doc: dict, path: str) -> str | None:
    """Write the PNG; return why not (matplotlib missing, nothing to plot), else ``None``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no plot written"
    series: dict[tuple[str, str], list[tuple[int, float, float | None]]] = {}
    for r in doc["results"]:
        c = r["config"]
        if c["role"] not in ("sweep", "memory"):
            continue
        for name, v in r["variants"].items():
            mem = v.get("memory") or {}
            peak = mem["peak_extra_bytes"] / MiB if mem.get("status") == "ok" else None
            if c["role"] == "memory":  # B=H=1, timed once in the memory subprocess
                if peak is not None:
                    series.setdefault((r["backend"], f"{name} B=H=1"), []).append(
                        (c["Lq"], r["flop"] / mem["seconds"] / 1e9, peak))
                continue
            if v.get("status") == "ok":
                series.setdefault((r["backend"], name), []).append((c["Lq"], v["gflops"], peak))
    if not series:
        return "no sweep results to plot"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 6))
    colors = {}
    styles = {"auto": "-", "direct": "--", "chunked": ":", "native": "-.", "compiled": "-",
              "kernel": "-"}
    markers = {"kernel": "s", "native": "^", "compiled": "D"}
    for (backend, variant), pts in sorted(series.items()):
        pts.sort()
        color = colors.setdefault(backend, f"C{len(colors)}")
        base = variant.split()[0]
        kw = {"color": color, "linestyle": styles.get(base, "-") if base == variant else "",
              "marker": markers.get(base, "o") if base == variant else "*",
              "label": f"{backend} {variant}",
              "alpha": 0.6 if variant == "kernel" else 1.0,
              "markersize": 9 if base != variant else 5}
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], **kw)
        mem = [(p[0], p[2]) for p in pts if p[2] is not None]
        if mem:
            ax2.plot([m[0] for m in mem], [max(m[1], 1e-2) for m in mem], **kw)
    for name, rate in doc["machine"]["matmul"].items():
        if rate.get("status") == "ok":
            ax1.axhline(rate["gflops"], color=colors.get(name, "grey"), linewidth=0.8,
                        linestyle=(0, (1, 3)))
    sweep = next(r["config"] for r in doc["results"] if r["config"]["role"] == "sweep")
    title = f"B={sweep['B']} H={sweep['H']} D={sweep['D']} {sweep['dtype']}, non-causal"
    ax1.set(xscale="log", xlabel="N (= Lq = Lk)", ylabel="GFLOP/s (4·B·H·N²·D / time)",
            title=f"Throughput, {title}\n(dotted: fp32 matmul rate of each framework)")
    ax2.set(xscale="log", yscale="log", xlabel="N (= Lq = Lk)",
            ylabel="peak MiB above inputs and output", title=f"Peak working memory, {title}")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax1.get_legend_handles_labels()
    fig.suptitle(f"attnspec benchmarks ({doc['mode']} mode) - {doc['started']}; "
                 "stars: B=H=1 memory-target runs, one call each", fontsize=10)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8,
               frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
