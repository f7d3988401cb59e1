"""bench/gpu_check.sh, the GPU acceptance check: its whole run on the CPU (--device cpu, the smoke test CI runs),
the figures it reads from the benches' output, a failing, a hung and an unreached step (recorded, the others
still run, the exit status 1), and the one-line refusal of --device cuda where no GPU is visible."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, load_script

gc = load_script("bench/gpu_check.py")
SCRIPT = os.path.join(REPO, "bench", "gpu_check.sh")

TRAIN_OUT = """\
wrote 200 samples x 5 utterance features (1024, 1024, 768, 768, 512 dims) + bench-au-FRM (T x 35, T in 10..60), one .npy each, in 0.2s
packed (or opened) the 6 features in 0.8s
device cuda (NVIDIA H200); batch 64; amp bf16; compile off; all timed steps after 5
auto_attention: list gathered on the device in 0.02s; samples/s: ours 58,123 | MRAC25 (2 workers) 5,901 | bare 60,185
auto_attention: ours/MRAC25 9.85, ours/bare 0.97
moe: list gathered on the device in 0.01s; samples/s: ours 71,004 | MRAC25 (2 workers) 6,010 | bare 72,500
moe: ours/MRAC25 11.81, ours/bare 0.98
lowest over auto_attention, moe:
ours/MRAC25: 9.85
ours/bare: 0.97
"""

EXTRACT_OUT = """\
4 clips synthesised in 0.2s; device cpu, torch threads 2, size mini
audio  hubert 128x4, batch 1, workers 0, padded batches: MERTools design    7.81 clips/s, ours    9.36 clips/s: 1.20x  (features agree to 5.3e-07 relative)
visual clip 128x4, batch 32, workers 0, fixed-size inputs batches: MERTools design    3.69 clips/s, ours    4.80 clips/s: 1.30x  (features agree to 1.4e-07 relative)
text   bert 128x4, batch 32, workers 0, padded batches: MERTools design  178.77 clips/s, ours  345.59 clips/s: 1.93x  (features agree to 1.8e-07 relative, ours in bfloat16)
all modalities: MERTools design 1.6s, ours 1.3s for 4 clips each
speedup: 1.27
"""


def test_the_benches_figures_are_read_from_their_output():
    t = gc.parse_train_throughput(TRAIN_OUT)
    assert t["ours/MRAC25"] == 9.85 and t["ours/bare"] == 0.97
    assert (t["device"], t["device_detail"], t["amp"], t["samples"]) == ("cuda", "NVIDIA H200", "bf16", 200)
    assert t["models"]["auto_attention"]["ours_samples_per_s"] == 58123
    assert t["models"]["moe"]["mrac25_samples_per_s"] == 6010 and t["models"]["moe"]["ours_over_bare"] == 0.98
    e = gc.parse_extract_throughput(EXTRACT_OUT)
    assert e["speedup"] == 1.27 and set(e["modalities"]) == {"audio", "visual", "text"}
    assert e["modalities"]["visual"]["batching"] == "fixed-size inputs"
    assert e["modalities"]["text"]["ours_clips_per_s"] == 345.59 and e["device"] == "cpu"
    assert gc.parse_pytest("....\n3 passed, 2 skipped, 520 deselected in 12.34s\n") == {
        "passed": 3, "skipped": 2, "deselected": 520, "seconds": 12.34}
    assert gc.parse_pytest("520 deselected in 9.10s") == {"deselected": 520, "seconds": 9.1}
    g = gc.parse_grid("seed0: done in 16.6s, valid f1 0.6074, test f1 0.5017\n4 of 4 runs finished (0 skipped)")
    assert g["runs_finished"] == 4 and g["per_run"]["seed0"]["test_f1"] == 0.5017
    ctx = gc.Context("/nowhere", "cuda", sys.executable)
    assert gc.check_train_throughput(ctx, 0, TRAIN_OUT)[1] is None
    assert gc.check_train_throughput(ctx, 0, TRAIN_OUT.replace("device cuda", "device cpu"))[1][0] == gc.FAILED
    assert gc.check_cuda_tests(ctx, 5, "520 deselected in 9.10s")[1][0] == gc.FAILED  # on a GPU: none ran
    cpu = gc.Context("/nowhere", "cpu", sys.executable)
    assert gc.check_cuda_tests(cpu, 5, "520 deselected in 9.10s")[1][0] == gc.OK
    assert gc.check_extract_throughput(cpu, 0, EXTRACT_OUT)[1] is None
    assert gc.check_extract_throughput(cpu, 0, EXTRACT_OUT.replace("speedup: 1.27", ""))[1][0] == gc.FAILED


RANKS_OUT = """\
rank 1 local_rank 1 of 2: device cuda:1; current_device 1; contexts 1; model cuda:1; extraction batch cuda:1 bfloat16; training batch cuda:1 float32; explicit index refused
rank 0 local_rank 0 of 2: device cuda:0; current_device 0; contexts 0; model cuda:0; extraction batch cuda:0 bfloat16; training batch cuda:0 float32; explicit index refused
"""


def test_case11_the_gpu_check_compares_each_ranks_device_with_its_local_rank():
    """bench/rank_devices.py's lines, read and judged: every rank on GPU LOCAL_RANK, with its context there only,
    and cuda:0 refused; a machine with one GPU runs one process and says that the 2-rank check was skipped."""
    ranks = gc.parse_rank_devices(RANKS_OUT)
    assert sorted(ranks) == [0, 1] and ranks[1]["current_device"] == "1" and ranks[1]["world"] == 2
    assert ranks[0]["extraction_dtype"] == "bfloat16" and ranks[1]["explicit_index"] == "refused"
    two = gc.Context("/nowhere", "cuda", sys.executable)
    two.gpus = 8
    assert gc.rank_processes(two) == 2 and gc.check_torchrun_ranks(two, 0, RANKS_OUT)[1] is None
    on_gpu0 = RANKS_OUT.replace("current_device 1; contexts 1", "current_device 0; contexts 0,1")
    status, note = gc.check_torchrun_ranks(two, 0, on_gpu0)[1]
    assert status == gc.FAILED and "rank 1" in note and "current_device 0" in note and "contexts 0,1" in note
    accepted = RANKS_OUT.replace("explicit index refused", "explicit index accepted")
    assert "not refused" in gc.check_torchrun_ranks(two, 0, accepted)[1][1]
    assert "ranks [1] reported" in gc.check_torchrun_ranks(two, 0, RANKS_OUT.splitlines()[0])[1][1]
    one = gc.Context("/nowhere", "cuda", sys.executable)
    one.gpus = 1
    status, note = gc.check_torchrun_ranks(one, 0, RANKS_OUT.splitlines()[1].replace("of 2", "of 1"))[1]
    assert gc.rank_processes(one) == 1 and status == gc.OK and "skipped" in note and "2 GPUs" in note
    cpu = gc.Context("/nowhere", "cpu", sys.executable)
    cpu_out = "".join(f"rank {r} local_rank {r} of 2: device cpu; current_device none; contexts none; model cpu; "
                      f"extraction batch cpu float32; training batch cpu float32; explicit index refused\n"
                      for r in (0, 1))
    assert gc.rank_processes(cpu) == 2 and gc.check_torchrun_ranks(cpu, 0, cpu_out)[1] is None


FINETUNE_OUT = """\
data set ftcheck: 3 labels, keyword texts and pitch tones; tiny Qwen2 and HuBERT; made in 4.1s
----- text_cuda: bench/finetune_cuda.py _observe text_cuda ... (exit code 0)
observed text_cuda rank 0 local_rank 0 of 1: states cuda:0 bfloat16; model cuda:0; autocast bf16; base bfloat16; adapters float32; quantised 0; current_device 0; bf16_supported yes
result text_cuda: val_f1 0.9582; best_epoch 2 of 5; files 136 of 136; width 64 (embed_dim 64); dtype float16; finite yes; device cuda:0; peak_memory 0.02 GiB (GPU)
-----
part text_cuda: ok in 11.2s: val_f1 0.9582, autocast bf16, states bfloat16, 136 files of width 64
observed audio_cuda rank 0 local_rank 0 of 1: states cuda:0 bfloat16; model cuda:0; autocast bf16; base bfloat16; adapters float32; quantised 0; current_device 0; bf16_supported yes
result audio_cuda: val_f1 1.0000; best_epoch 2 of 5; files 136 of 136; width 64 (embed_dim 64); dtype float16; finite yes; device cuda:0; peak_memory 0.03 GiB (GPU)
part audio_cuda: ok in 12.0s: val_f1 1.0000, autocast bf16, states bfloat16, 136 files of width 64
part text_4bit_cuda: skipped: bitsandbytes is not installed (pip install bitsandbytes)
part text_ranks_cuda: skipped: 1 GPU: the 2-rank check needs 2 GPUs
observed text_cpu rank 0 local_rank 0 of 1: states cpu float32; model cpu; autocast off; base float32; adapters float32; quantised 0; current_device none; bf16_supported yes
result text_cpu: val_f1 0.9582; best_epoch 2 of 5; files 136 of 136; width 64 (embed_dim 64); dtype float16; finite yes; device cpu; peak_memory 0.46 GiB (CPU, resident)
part text_cpu: ok in 20.3s: val_f1 0.9582, autocast off, states float32, 136 files of width 64
observed audio_cpu rank 0 local_rank 0 of 1: states cpu float32; model cpu; autocast off; base float32; adapters float32; quantised 0; current_device none; bf16_supported yes
result audio_cpu: val_f1 1.0000; best_epoch 2 of 5; files 136 of 136; width 64 (embed_dim 64); dtype float16; finite yes; device cpu; peak_memory 0.62 GiB (CPU, resident)
part audio_cpu: ok in 31.9s: val_f1 1.0000, autocast off, states float32, 136 files of width 64
compare text: val_f1 cuda 0.9582, cpu 0.9582
compare audio: val_f1 cuda 1.0000, cpu 1.0000
finetune_cuda: 4 ok, 2 skipped, 0 failed in 40.3s
"""


def test_the_finetuning_steps_parts_are_read_and_judged():
    """finetune_cuda: each part's verdict, what its run saw inside the training and wrote, the F1 of both devices;
    skipped parts named with their reasons in an ok step; a failed or a missing part fails the step. The bench's
    own judge: bf16 autocast over a bfloat16 base on CUDA, float32 on the CPU, each rank on GPU LOCAL_RANK."""
    cuda = gc.Context("/nowhere", "cuda", sys.executable)
    figs, verdict = gc.check_finetune_cuda(cuda, 0, FINETUNE_OUT)
    parts = figs["parts"]
    assert verdict[0] == gc.OK and "text_4bit_cuda (bitsandbytes is not installed" in verdict[1]
    assert "text_ranks_cuda (1 GPU: the 2-rank check needs 2 GPUs)" in verdict[1]
    assert parts["text_cuda"]["status"] == gc.OK and parts["text_cuda"]["seconds"] == 11.2
    assert parts["text_cuda"]["observed"][0]["autocast"] == "bf16" and parts["audio_cuda"]["result"]["files"] == 136
    assert parts["text_cpu"]["result"]["peak_memory"] == "0.46 GiB (CPU, resident)"
    assert figs["compare_val_f1"]["text"] == {"cuda": 0.9582, "cpu": 0.9582} and (figs["ok"], figs["skipped"]) == (4, 2)
    broken = FINETUNE_OUT.replace("part audio_cuda: ok in 12.0s: val_f1 1.0000, autocast bf16, states bfloat16, 136 "
                                  "files of width 64", "part audio_cuda: failed in 9.0s: embeddings not finite")
    status, note = gc.check_finetune_cuda(cuda, 1, broken)[1]
    assert status == gc.FAILED and note == "audio_cuda: embeddings not finite"
    cut = FINETUNE_OUT.split("observed text_cpu")[0]  # the step's timeout stopped it there
    status, note = gc.check_finetune_cuda(cuda, -9, cut)[1]
    assert status == gc.FAILED and note.startswith("no verdict for text_cpu, audio_cpu")
    cpu = gc.Context("/nowhere", "cpu", sys.executable)
    assert gc.check_finetune_cuda(cpu, 0, FINETUNE_OUT)[1][0] == gc.OK
    no_gpu_part = FINETUNE_OUT.replace("part text_cuda: ok in 11.2s: val_f1 0.9582, autocast bf16, states bfloat16, "
                                       "136 files of width 64", "part text_cuda: skipped: --device cpu: no CUDA part")
    status, note = gc.check_finetune_cuda(cuda, 0, no_gpu_part)[1]
    assert status == gc.FAILED and note.startswith("text_cuda did not run")

    ft = gc._finetune_bench()
    runs = ft.parse(FINETUNE_OUT)
    assert ft.judge("text_cuda", runs["text_cuda"]) is None and ft.judge("text_cpu", runs["text_cpu"]) is None
    no_autocast = ft.parse(FINETUNE_OUT.replace("autocast bf16; base bfloat16", "autocast off; base bfloat16", 1))
    assert "expected bf16 autocast" in ft.judge("text_cuda", no_autocast["text_cuda"])
    unlearnt = ft.parse(FINETUNE_OUT.replace("result text_cpu: val_f1 0.9582", "result text_cpu: val_f1 0.4100"))
    assert "not learnt" in ft.judge("text_cpu", unlearnt["text_cpu"])
    ranks = "".join(f"observed text_ranks_cuda rank {r} local_rank {r} of 2: states cuda:{d} bfloat16; model cuda:{d}; "
                    f"autocast bf16; base bfloat16; adapters float32; quantised 0; current_device {d}; "
                    f"bf16_supported yes\n" for r, d in ((0, 0), (1, 0)))
    ranks += FINETUNE_OUT.split("\n")[3].replace("text_cuda", "text_ranks_cuda") + "\n"
    note = ft.judge("text_ranks_cuda", ft.parse(ranks)["text_ranks_cuda"], ranks=2)
    assert note.startswith("rank 1: states_device cuda:0, model cuda:0, current_device 0; expected cuda:1")
    four_bit = FINETUNE_OUT.split("\n")[2:4]
    four_bit = "\n".join(four_bit).replace("text_cuda", "text_4bit_cuda")
    assert "no 4-bit layer" in ft.judge("text_4bit_cuda", ft.parse(four_bit)["text_4bit_cuda"])
    quantised = ft.parse(four_bit.replace("quantised 0", "quantised 14"))["text_4bit_cuda"]
    assert ft.judge("text_4bit_cuda", quantised) is None


THROUGHPUT_OUT = """\
shape qwen2.5-1.5b: hidden 1536, layers 28, heads 12 (2 kv), intermediate 8960, vocab 151936; random weights built on cuda:0 in bfloat16
device cuda:0 (NVIDIA H200); autocast bf16; batch 8 x 128 tokens; LoRA r 8; 3 warm-up steps, 10 timed
LoRA targets: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
grad_checkpointing off: 1,559,561,224 parameters, 15,847,431 trainable; built in 4.2s; 131.5 samples/s (16,832 tokens/s), 60.8 ms/step; loss 1.2210; peak memory 6.11 GiB (GPU)
grad_checkpointing on: 1,559,561,224 parameters, 15,847,431 trainable; built in 1.9s; 101.0 samples/s (12,928 tokens/s), 79.2 ms/step; loss 1.2209; peak memory 3.80 GiB (GPU)
samples/s: off 131.5, on 101.0
"""


def test_the_finetune_throughput_figures_are_read_and_its_cpu_run_passes(capsys):
    """Its figures, read from a GPU run's output and judged; and its tiny CPU run (the trainer's own loop) gives
    lines that the parser reads and the check accepts."""
    cuda = gc.Context("/nowhere", "cuda", sys.executable)
    figs, verdict = gc.check_finetune_throughput(cuda, 0, THROUGHPUT_OUT)
    assert verdict is None and figs["shape"] == "qwen2.5-1.5b" and figs["hidden"] == 1536 and figs["layers"] == 28
    assert (figs["batch_size"], figs["tokens"], figs["lora"], figs["device_detail"]) == (8, 128, 8, "NVIDIA H200")
    off, on = figs["grad_checkpointing"]["off"], figs["grad_checkpointing"]["on"]
    assert off["samples_per_s"] == 131.5 and on["peak_memory_gib"] == 3.8 and off["parameters"] == 1559561224
    assert gc.check_finetune_throughput(cuda, 0, THROUGHPUT_OUT.replace("bfloat16", "float32"))[1][0] == gc.FAILED
    lone = THROUGHPUT_OUT.split("grad_checkpointing on")[0]
    assert "not off and on" in gc.check_finetune_throughput(cuda, 0, lone)[1][1]

    bench = load_script("bench/finetune_throughput.py")
    assert bench.main(["--device", "cpu", "--steps", "1", "--warmup", "1", "--tokens", "8"]) == 0
    out = capsys.readouterr().out
    cpu = gc.Context("/nowhere", "cpu", sys.executable)
    figs, verdict = gc.check_finetune_throughput(cpu, 0, out)
    assert verdict is None, (verdict, out)
    assert figs["shape"] == "tiny" and figs["base_dtype"] == "float32" and figs["autocast"] == "off"
    assert figs["grad_checkpointing"]["on"]["trainable"] < figs["grad_checkpointing"]["on"]["parameters"]
    assert gc.check_finetune_throughput(cuda, 0, out)[1][0] == gc.FAILED  # a CPU run does not pass for CUDA


MLLM_LINE = (r"(qwen2-audio-tower|qwen2-audio-lm|qwen2\.5-vl-vision|qwen2\.5-vl-lm)\s+(\S+) (\d+)x(\d+), batch (\d+), "
             r"workers (\d+), (.+?) batches: MERTools design\s+([\d.]+) clips/s, ours\s+([\d.]+) clips/s: ([\d.]+)x\s+"
             r"\(features agree to ([\d.eE+-]+) relative\)$")


def test_the_extraction_bench_times_the_multimodal_llm_parts_both_ways(capsys):
    """bench/extract_throughput.py on Qwen2-Audio's audio tower and language model (tiny shapes, 4 clips): a line for
    each with both designs' clips/s (one clip at a time through the same encoder; ours batched), features that
    agree, and ``speedup:`` as the last line, which the GPU check's parser reads."""
    import re

    bench = load_script("bench/extract_throughput.py")
    assert bench.main(["--modality", "qwen2-audio-tower,qwen2-audio-lm", "--clips", "4", "--size", "tiny",
                       "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    found = {m.group(1): m for m in (re.match(MLLM_LINE, line) for line in lines) if m}
    assert set(found) == {"qwen2-audio-tower", "qwen2-audio-lm"}, out
    assert found["qwen2-audio-tower"].group(2, 3, 4) == ("whisper", "64", "2")
    assert found["qwen2-audio-lm"].group(2, 3, 4) == ("qwen2", "64", "2")
    for m in found.values():
        assert float(m.group(8)) > 0 and float(m.group(9)) > 0 and float(m.group(11)) < 1e-3
    assert lines[-2].startswith("all modalities: MERTools design") and re.match(r"speedup: [\d.]+$", lines[-1])
    assert gc.parse_extract_throughput(out)["speedup"] == float(lines[-1].split()[1])
    with pytest.raises(SystemExit):
        bench.main(["--modality", "qwen2-audio,text"])  # not a family: refused by its parser
    assert "qwen2-audio-tower" in capsys.readouterr().err


def test_the_extraction_bench_times_qwen2_5_vl_s_vision_tower_without_torchvision(capsys):
    """Qwen2.5-VL's video processor needs torchvision; without it the project's Pillow port stands in, so the vision
    tower is timed both ways on 1-3 s videos, the features agree, and the GPU check's parser reads the line."""
    import re

    bench = load_script("bench/extract_throughput.py")
    assert bench.main(["--modality", "qwen2.5-vl-vision", "--clips", "2", "--size", "tiny", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    m = re.match(MLLM_LINE, lines[1])
    assert m and m.group(2, 3, 4) == ("vit", "64", "2") and float(m.group(11)) < 1e-3, lines
    assert re.match(r"speedup: [\d.]+$", lines[-1])
    assert set(gc.parse_extract_throughput(out)["modalities"]) == {"qwen2.5-vl-vision"}


def test_a_failed_a_hung_and_an_unreached_step_are_recorded_and_the_exit_status_is_1(tmp_path):
    ctx = gc.Context(str(tmp_path), "cpu", sys.executable)
    gc.prepare_work(ctx)

    def py(code):
        return [sys.executable, "-c", code]

    def check(ctx, rc, text):
        return ({"value": float(text.split()[-1])}, None) if rc == 0 else ({}, gc.failed_note(rc, text))

    steps = [gc.Step("fails", "exits 1", [py("print('before'); raise ValueError('broken input')")], 30, check),
             gc.Step("hangs", "sleeps past its timeout", [py("print('waiting', flush=True)\nimport time\n"
                                                             "time.sleep(60)")], 1.5, check),
             gc.Step("works", "prints a figure", [py("print('figure 2.5')")], 30, check)]
    code = gc.run_check(str(tmp_path), "cpu", steps, ctx, budget=60, facts={"python": "x"})
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {s["name"]: s for s in report["steps"]}
    assert code == 1 and report["ok"] is False and report["failed"] == ["fails", "hangs"]
    assert status["fails"]["status"] == gc.FAILED and status["fails"]["returncode"] == 1
    assert "ValueError: broken input" in status["fails"]["note"] and "before" in status["fails"]["tail"]
    assert status["hangs"]["status"] == gc.TIMED_OUT and status["hangs"]["seconds"] < 15
    assert status["works"]["status"] == gc.OK and status["works"]["figures"] == {"value": 2.5}
    log = (tmp_path / "gpu_check.log").read_text()
    assert "before" in log and "waiting" in log and "figure 2.5" in log
    assert report["work_kept"]  # kept for a look, as a step failed

    # a step the budget no longer reaches is not run, and counts as a failure
    gc.prepare_work(ctx)
    code = gc.run_check(str(tmp_path), "cpu", [steps[1], gc.Step("late", "after", [py("print(1)")], 30, check)],
                        ctx, budget=6, facts={})
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert code == 1 and [s["status"] for s in report["steps"]] == [gc.TIMED_OUT, gc.NOT_RUN]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_cuda_without_a_gpu_fails_at_once_with_one_line(tmp_path):
    res = subprocess.run([SCRIPT, str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PY=sys.executable))
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "--device cpu" in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_whole_check_on_the_cpu(tmp_path):
    """bench/gpu_check.sh OUT --device cpu: every step ok (a --compile with no C++ compiler: skipped), figures
    parsed, nothing left in the repository's data folders."""
    out = tmp_path / "check"
    res = subprocess.run([SCRIPT, str(out), "--device", "cpu"], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PY=sys.executable))
    report = json.loads((out / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    summary = {n: (s["status"], s["note"]) for n, s in steps.items()}
    assert res.returncode == 0 and report["ok"], (summary, res.stdout[-3000:])
    assert list(steps) == ["cuda_tests", "train_fp32", "train_bf16", "extract", "torchrun_extract", "torchrun_ranks",
                           "grid", "compile", "finetune_cuda", "finetune_throughput", "extract_mllm"]
    assert all(s["status"] == gc.OK for n, s in steps.items() if n != "compile")
    assert steps["compile"]["status"] == gc.OK or "no compiler" in steps["compile"]["note"]
    assert report["machine"]["torch"] == torch.__version__ and report["machine"]["python"]
    assert "no CUDA tests ran" in steps["cuda_tests"]["note"]
    for name in ("train_fp32", "train_bf16"):
        f = steps[name]["figures"]
        assert f["ours/MRAC25"] > 0 and f["ours/bare"] > 0 and f["device"] == "cpu"
        assert all(v > 0 for m in f["models"].values() for k, v in m.items() if k.endswith("samples_per_s"))
    assert steps["train_bf16"]["figures"]["amp"] == "bf16"
    e = steps["extract"]["figures"]
    assert e["speedup"] > 0 and all(m["ours_clips_per_s"] > 0 for m in e["modalities"].values())
    t = steps["torchrun_extract"]["figures"]
    assert t["files"] == t["names"] > 0 and t["shapes"] == [[t["registered_dim"]]] and t["processes"] == 1
    r = steps["torchrun_ranks"]["figures"]
    assert r["processes"] == 2 and all(x["device"] == "cpu" for x in r["ranks"].values())
    g = steps["grid"]["figures"]
    assert g["runs_finished"] == 4 and all(0 < s["test_f1"] <= 1 for s in g["summaries"].values())
    if steps["compile"]["status"] == gc.OK:
        assert steps["compile"]["figures"]["compiled"] is True
    ft = steps["finetune_cuda"]["figures"]["parts"]  # the CPU parts ran and learnt; the CUDA ones said skipped
    assert all(ft[k]["status"] == gc.OK and ft[k]["result"]["val_f1"] >= 0.8 for k in ("text_cpu", "audio_cpu"))
    assert all(ft[k]["status"] == gc.SKIPPED for k in ft if k.endswith("_cuda"))
    assert ft["text_cpu"]["observed"]["0"]["autocast"] == "off"
    assert "skipped: text_cuda" in steps["finetune_cuda"]["note"]
    tp = steps["finetune_throughput"]["figures"]
    assert tp["shape"] == "tiny" and all(r["samples_per_s"] > 0 for r in tp["grad_checkpointing"].values())
    m = steps["extract_mllm"]["figures"]
    assert set(m["modalities"]) == set(gc.MLLM_FAMILIES) and m["speedup"] > 0
    assert all(f["max_relative_difference"] < 1e-3 for f in m["modalities"].values())
    log = (out / "gpu_check.log").read_text()
    assert all(f"===== {n}: " in log for n in steps)
    assert not (out / "work").exists()  # every step passed: the scratch data are gone
