"""Which rows are current (generations) and which rows may be compared (pairing_key)."""
from __future__ import annotations

from quantbench.common.row import SCHEMA_VERSION


def _row(cell: str, status: str = "ok", **kw):
    return {"schema_version": SCHEMA_VERSION, "cell_id": cell, "status": status, **kw}


# ---- generations: a rerun with other inputs supersedes the rows it measures again ------------------


def _gen_row(cell: str, variant: str, eval_samples: int, when: str, precision: str = "int8", model: str = "m",
             runtime_part: str = "rt", top1: float = 0.9, **kw) -> dict:
    """A row as the runner writes it, reduced to what decides its generation (numbers made up)."""
    return _row(cell, model=model, variant=variant, precision=precision, runtime="ort-cpu", runtime_label="ort-cpu",
                device="cpu", batch=1, timestamp=when, top1=top1, env={"host": "h"},
                fingerprint_parts={"model": "w", "timing": "t", "runtime": runtime_part},
                dataset={"fingerprint": "d", "eval_samples": eval_samples}, eval_samples=eval_samples, **kw)


def _gen_a():
    return [_gen_row("a-fp32", "fp32", 200, "2026-01-01T00:00:00", precision="fp32"),
            _gen_row("a-int8", "int8", 200, "2026-01-01T00:00:00")]


def test_a_rerun_with_other_eval_samples_supersedes_every_row_it_measured_again():
    from quantbench.common.row_keys import current_rows

    b = [_gen_row("b-fp32", "fp32", 100, "2026-01-02T00:00:00", precision="fp32"),
         _gen_row("b-int8", "int8", 100, "2026-01-02T00:00:00")]
    current, older = current_rows(_gen_a() + b)
    assert [r["cell_id"] for r in current] == ["b-fp32", "b-int8"]
    assert [r["cell_id"] for r in older] == ["a-fp32", "a-int8"]


def test_an_interrupted_rerun_shows_only_its_own_generation_never_a_mix():
    """Run 2 (eval 100) stopped after its FP32 cell: the INT8 row of run 1 (eval 200) is not current."""
    from quantbench.common.row_keys import current_rows

    current, older = current_rows(_gen_a() + [_gen_row("b-fp32", "fp32", 100, "2026-01-02T00:00:00",
                                                       precision="fp32")])
    assert [r["cell_id"] for r in current] == ["b-fp32"]
    assert {r["cell_id"] for r in older} == {"a-fp32", "a-int8"}


def test_other_threads_on_one_runtime_supersede_its_rows_but_not_the_other_models():
    from quantbench.common.row_keys import current_rows

    other_model = _gen_row("x", "fp32", 200, "2026-01-01T00:00:00", precision="fp32", model="m2")
    new_fp32 = _gen_row("c-fp32", "fp32", 200, "2026-01-03T00:00:00", precision="fp32", runtime_part="rt-2-threads")
    current, older = current_rows([*_gen_a(), other_model, new_fp32])
    assert [r["cell_id"] for r in current] == ["x", "c-fp32"]
    assert {r["cell_id"] for r in older} == {"a-fp32", "a-int8"}


def test_a_variant_added_later_keeps_the_reused_fp32_row_current():
    from quantbench.common.row_keys import current_rows

    later = _gen_row("a-int8-entropy", "int8-entropy", 200, "2026-01-05T00:00:00")
    current, older = current_rows([*_gen_a(), later])
    assert len(current) == 3 and older == []


def test_other_timing_settings_on_one_runtime_leave_the_other_runtimes_current():
    """A rerun of one runtime with another min_time_s: its rows are a new generation of that runtime only."""
    from quantbench.common.row_keys import current_rows, pairing_key

    other = {**_gen_row("ov-fp32", "fp32", 200, "2026-01-01T00:00:00", precision="fp32"), "runtime_label": "openvino"}
    new = _gen_row("c-fp32", "fp32", 200, "2026-01-03T00:00:00", precision="fp32")
    new["fingerprint_parts"] = {**new["fingerprint_parts"], "timing": "t-longer"}
    current, older = current_rows([*_gen_a(), other, new])
    assert [r["cell_id"] for r in current] == ["ov-fp32", "c-fp32"]
    assert {r["cell_id"] for r in older} == {"a-fp32", "a-int8"}
    assert pairing_key(new) != pairing_key(_gen_a()[1])  # never the reference of the older INT8 row
