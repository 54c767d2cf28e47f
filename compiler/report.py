"""report.html: the compile report as a page a person reads: summary table, the search's
Pareto front (predicted latency vs score) and per-group widths, one section per target."""
from __future__ import annotations

import base64
import html
import io
from typing import Any


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plots(t: dict[str, Any]) -> tuple[str, str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = t["search"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.scatter([c[0] for c in s["archive"]], [c[1] for c in s["archive"]], s=10, alpha=0.5, label="candidates")
    front = s["pareto"]
    ax.plot([c[0] for c in front], [c[1] for c in front], "r-o", ms=3, label="Pareto front")
    ax.axvline(t["budget_ms"], color="k", ls=":", label="budget")
    ax.scatter([t["predicted_ms"]], [t["accuracy"]["adabn"]], marker="*", s=160, color="gold", edgecolor="k",
               label="chosen", zorder=5)
    u = t.get("uniform")
    if u:
        ax.scatter([u["predicted_ms"]], [u["adabn"]], marker="s", s=60, color="#888", edgecolor="k",
                   label="uniform scaling", zorder=4)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("score after AdaBN")
    ax.legend(fontsize=8)
    fig.tight_layout()
    pareto = _png(fig)
    groups = [g for g in t["groups"] if g["prunable"]]
    fig, ax = plt.subplots(figsize=(max(6, len(groups) * 0.3), 4.2))
    ax.bar(range(len(groups)), [g["size"] for g in groups], color="#ddd", label="original")
    ax.bar(range(len(groups)), [g["kept"] for g in groups], color="#3a7", label="kept")
    ax.set_xticks(range(len(groups)), [g["id"] for g in groups], rotation=75, ha="right", fontsize=7)
    ax.set_xlabel("prunable channel group (graph order)")
    ax.set_ylabel("channels")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return pareto, _png(fig)


def _bought(t: dict[str, Any]) -> str:
    """The searched model against uniform width scaling under the same budget, both after AdaBN."""
    u = t.get("uniform")
    if not u:
        return "no uniform scaling fits the budget"
    gain = t["accuracy"]["adabn"] - u["adabn"]
    return (f"searched {t['accuracy']['adabn']:.4f} vs uniform scaling {u['adabn']:.4f} (width x{u['ratio']:.2f}, "
            f"predicted {u['predicted_ms']:.4g} ms) after AdaBN: {gain:+.4f}")


def _refit(layers: list[dict[str, Any]]) -> str:
    """One line on the reconstruct pass: layers refitted, their output error before and after."""
    done = [r for r in layers if r.get("refitted")]
    text = f"{len(done)} of {len(layers)} layers reading pruned channels refitted"
    if done:
        before, after = (sorted(r[k] for r in done)[len(done) // 2] for k in ("error_before", "error_after"))
        text += f"; median relative output error {before:.3f} -> {after:.3f}"
    skipped = [f"{r['layer']} ({r['skipped']})" for r in layers if "skipped" in r]
    return text + (f"; kept as sliced: {', '.join(skipped)}" if skipped else "")


def resolutions(res: dict[str, Any]) -> str:
    """What each resolution's search found: its best candidate's score and prediction, or its floor."""
    return "; ".join(f"{'x'.join(map(str, t['size']))}: " + (
        "budget below its floor" if "infeasible" in t else f"{t['score']:.4f} at {t['predicted_ms']:.4g} ms"
        + (f", {t['refit_score']:.4f} refitted" if "refit_score" in t else ""))
        for t in res["tried"])


def render(report: dict[str, Any]) -> str:
    esc = html.escape
    parts = [f"<h1>latprune compile: {esc(str(report['model']))}</h1>",
             f"<p>status: <b>{esc(report['status'])}</b>; seed {report['seed']}; "
             f"total {report['seconds']['total']:.1f} s</p>"]
    for name, t in report["targets"].items():
        v, acc = t["verify"], t["accuracy"]
        measured = v.get("skipped") or v.get("not_timed") or \
            f"{v['measured_ms']:.4g} ms (p10-p90 {v['measured_p10_ms']:.4g}-{v['measured_p90_ms']:.4g})" + \
            (f"; {v['measured_share']:.3g}x the unpruned engine, {v['unpruned_measured_ms']:.4g} ms beside it"
             if "measured_share" in v else "")
        rows = [("budget", f"{t['budget']} = {t['budget_ms']:.4g} ms"),
                ("predicted / measured", f"{t['predicted_ms']:.4g} ms / {measured}"),
                ("unpruned (predicted)", f"{t['full_ms']:.4g} ms"),
                ("params / MACs", f"{t['params']['pruned']:,} / {t['macs']['pruned']:,} "
                                  f"(of {t['params']['original']:,} / {t['macs']['original']:,})"),
                ("accuracy", ", ".join(f"{k} {v:.4f}" for k, v in acc.items() if v is not None)),
                ("outputs vs PyTorch", v["skipped"] if "skipped" in v else f"max rel. error {v['output_max_rel_error']:.2e}"),
                ("search", f"{t['search']['stats']['candidates']} candidates, "
                           f"{t['search']['stats']['candidates_per_second']} /s"),
                ("what the search bought", _bought(t))]
        if t.get("reconstruct"):
            rows.append(("least-squares refit", _refit(t["reconstruct"])))
        if choice := t.get("refit_choice"):
            kept, top = next(c for c in choice if c["kept"]), choice[0]
            rows.append(("chosen after the refit", f"{len(choice)} candidates refitted; kept {kept['score']:.4f} after "
                         f"AdaBN -> {kept['refit_score']:.4f} refitted (the search's first: {top['score']:.4f} -> "
                         f"{top['refit_score']:.4f})"))
        if res := t.get("resolution"):
            rows.append(("resolution", f"{'x'.join(map(str, res['chosen']))} chosen; " + resolutions(res)))
        rows += [(f"iterative step {s['step']}", f"budget {s['budget_ms']:.4g} ms, predicted {s['predicted_ms']:.4g} ms, "
                  f"{s['kept']:.0%} of the channels kept, accuracy {s['accuracy']:.4f} ({s['seconds']:.1f} s)")
                 for s in t.get("steps", [])]
        pareto, widths = _plots(t)
        parts += [f"<h2>{esc(name)}</h2><table>"] + [f"<tr><th align=left>{esc(k)}</th><td>{esc(x)}</td></tr>"
                                                    for k, x in rows] + ["</table>",
                  f'<img src="data:image/png;base64,{pareto}"> <img src="data:image/png;base64,{widths}">']
    if sp := report.get("sparsity"):
        parts.insert(2, f"<p>sparsity training (Network Slimming): {sp['epochs']} epochs, penalty {sp['penalty']}; "
                        f"accuracy after it {sp['accuracy']:.4f}; BN scales under 1e-2: "
                        f"{sp['scales_before']['share_below_1e-2']:.1%} before, {sp['scales_after']['share_below_1e-2']:.1%} after</p>")
    if report.get("warnings"):
        parts.insert(2, "<ul>" + "".join(f"<li><b>warning:</b> {esc(w)}</li>" for w in report["warnings"]) + "</ul>")
    parts += ["<h2>seconds per stage</h2><table>"] + [f"<tr><th align=left>{esc(k)}</th><td>{v:.2f}</td></tr>"
                                                     for k, v in report["seconds"].items()] + ["</table>"]
    return "<!doctype html><meta charset=utf-8><title>latprune report</title>" \
           "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 10px}</style>" \
           + "\n".join(parts)
