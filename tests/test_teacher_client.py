"""The teacher client against a scripted local server speaking the OpenAI and Gemini wire formats.

Nothing leaves 127.0.0.1. Each clip's subtitle carries ``CLIP:<name>``, so the server knows which clip a
request is for and can script it (a 429, a slow answer, a malformed answer, ...) and count its requests.
"""

import io
import json
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import REPO

import config
from common.errors import DataError
from teachers.client import (AuthError, GeminiBackend, MediaSource, OpenAIBackend, TeacherRunner,
                                    aggregate_answers, even_subsample, open_output, read_output,
                                    record_line, with_subtitle)

LABELS = list(config.EMO_RULE["MER"])
SECRET = "sk-TEST-9f8e7d6c5b4a-SECRET"


def answer_json(label, conf=4):
    scores = {lab: (0.75 if lab == label else 0.05) for lab in LABELS}
    return json.dumps({"reasoning": f"the speaker looks {label}", "scores": scores, "label": label,
                       "confidence": conf, "contributions": {"face": 0.5, "body": 0.1, "voice": 0.2, "text": 0.2}})


class FakeServer:
    """Scripted behaviour per clip: ``script[clip]`` is a list of actions, one per request in order
    (``("status", code, headers)``, ``("sleep", seconds)``, ``("answer", text)``, ``("reply", json)``); after
    the script, the
    clip's ``answers`` (a list, taken by answered count) or a happy JSON answer."""

    def __init__(self):
        self.lock = threading.Lock()
        self.script, self.answers = {}, {}
        self.count, self.success, self.abandoned = Counter(), Counter(), Counter()
        self.requests = []  # (monotonic time, method, path, clip, headers, body dict)
        self.delay = 0.0
        self.expect_key = None
        self.gate_after, self.reserved, self.active = None, 0, 0
        self.gate = threading.Event()
        self.uploads, self.file_polls, self.deleted = {}, Counter(), []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _closed(sock):
    """Whether the client hung up (EOF or reset) while the server was busy."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, code, doc, headers=None):
        data = json.dumps(doc).encode()
        try:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass

    def do_POST(self):
        fake = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/upload/v1beta/files":
            assert self.headers["X-Goog-Upload-Protocol"] == "resumable"
            assert self.headers["X-Goog-Upload-Command"] == "start"
            with fake.lock:
                fid = f"f{len(fake.uploads)}"
                fake.uploads[fid] = {"mime": self.headers["X-Goog-Upload-Header-Content-Type"],
                                     "size": int(self.headers["X-Goog-Upload-Header-Content-Length"]),
                                     "key": self.headers.get("x-goog-api-key"), "data": None}
                fake.requests.append((time.monotonic(), "POST", self.path, None, dict(self.headers), None))
            return self._send(200, {}, {"X-Goog-Upload-URL": f"{fake.url}/upload-session/{fid}"})
        if self.path.startswith("/upload-session/"):
            fid = self.path.rsplit("/", 1)[1]
            assert self.headers["X-Goog-Upload-Command"] == "upload, finalize"
            fake.uploads[fid]["data"] = body
            return self._send(200, {"file": {"name": f"files/{fid}", "uri": f"{fake.url}/v1beta/files/{fid}",
                                             "state": "PROCESSING", "mimeType": fake.uploads[fid]["mime"]}})
        if self.path == "/v1/chat/completions" or self.path.endswith(":generateContent"):
            return self._generate(fake, body, "openai" if self.path.startswith("/v1/") else "gemini")
        self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_GET(self):
        fake = self.server.fake
        fid = self.path.rsplit("/", 1)[1]
        with fake.lock:
            fake.file_polls[fid] += 1
            state = "ACTIVE" if fake.file_polls[fid] >= 2 else "PROCESSING"
        self._send(200, {"name": f"files/{fid}", "state": state})

    def do_DELETE(self):
        self.server.fake.deleted.append(self.path.rsplit("/", 1)[1])
        self._send(200, {})

    def _generate(self, fake, raw, kind):
        doc = json.loads(raw)
        m = re.search(r"CLIP:([\w-]+)", raw.decode("utf-8"))
        clip = m.group(1) if m else None
        key = self.headers.get("x-goog-api-key") or (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        with fake.lock:
            n = fake.count[clip]
            fake.count[clip] += 1
            fake.requests.append((time.monotonic(), "POST", self.path, clip,
                                  {k.lower(): v for k, v in self.headers.items()}, doc))
            fake.active += 1
        try:
            if fake.expect_key is not None and key != fake.expect_key:
                # an error message that echoes the key: the client must not log or store it
                return self._send(401, {"error": {"code": 401, "message": f"API key {key} is not valid"}})
            script = fake.script.get(clip, [])
            action = script[n] if n < len(script) else ("answer", None)
            if action[0] == "status":
                return self._send(action[1], {"error": {"message": f"scripted {action[1]}"}}, action[2])
            if action[0] == "reply":
                return self._send(200, action[1])
            if action[0] == "sleep":
                time.sleep(action[1])
            if fake.delay:
                time.sleep(fake.delay)
            with fake.lock:
                must_wait = fake.gate_after is not None and fake.reserved >= fake.gate_after
                if not must_wait:
                    fake.reserved += 1
            if must_wait:
                fake.gate.wait(30)
            if _closed(self.connection):
                with fake.lock:
                    fake.abandoned[clip] += 1
                return
            if kind == "gemini":
                for part in doc["contents"][0]["parts"]:
                    if "file_data" in part:
                        fid = part["file_data"]["file_uri"].rsplit("/", 1)[1]
                        assert fake.file_polls[fid] >= 2, "file used before it was ACTIVE"
            with fake.lock:
                k = fake.success[clip]
                fake.success[clip] += 1
            text = action[1] if action[0] == "answer" and action[1] is not None else None
            if text is None:
                answers = fake.answers.get(clip)
                text = answers[k % len(answers)] if answers else answer_json("happy")
            if kind == "openai":
                reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 50, "completion_tokens": 20}}
            else:
                reply = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                         "finishReason": "STOP"}],
                         "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 20}}
            self._send(200, reply)
        finally:
            with fake.lock:
                fake.active -= 1


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    fake = FakeServer()
    yield fake
    fake.close()


def subtitles(names):
    return {n: f"CLIP:{n} well I did not expect that" for n in names}


def make_log():
    stream = io.StringIO()
    log = logging.getLogger(f"mer.teacher.test{id(stream)}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    handler = logging.StreamHandler(stream)
    log.addHandler(handler)
    return log, stream


def runner_for(server, tmp_path, names, backend=None, source=None, **kw):
    backend = backend or OpenAIBackend(server.url + "/v1", "test-vlm")
    source = source or MediaSource(("none",), subtitles=subtitles(names))
    opts = dict(workers=3, timeout=2.0, max_retries=3, backoff=0.01, progress=False, seed=0)
    opts.update(kw)
    return TeacherRunner(backend, "Which emotion? Labels: " + ", ".join(LABELS), LABELS, source,
                         str(tmp_path / "out.jsonl"), **opts)


def read_records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def tiny_png(path, w=4, h=3, seed=0):
    """A valid RGB PNG written by hand (zlib + CRC), no imaging library."""
    raw = b"".join(b"\x00" + bytes((seed * 31 + x * 17 + y * 7) % 256 for x in range(w * 3)) for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    path.write_bytes(png)


# ---------------------------------------------------------------------------------------------
def test_retries_timeouts_and_messy_answers(server, tmp_path):
    """(a) 429 then success, (b) a timeout then success, (c) a malformed answer, (d) a fenced Chinese answer,
    and a reply without an answer (a refusal)."""
    names = [f"c{i}" for i in range(6)]
    fenced = "好的，分析如下：\n```json\n" + json.dumps(
        {"推理过程": "他笑得很开心", "情感得分": {"中性": 0.1, "高兴": 0.8, "伤心": 0.1}, "情感标签": "高兴",
         "置信度": 4}, ensure_ascii=False) + "\n```"
    server.script = {"c0": [("status", 429, {"Retry-After": "0"})],
                     "c1": [("sleep", 1.0)],
                     "c2": [("answer", "I would rather not say, it is hard to tell.")],
                     "c3": [("answer", fenced)],
                     "c5": [("reply", {"choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]})]}
    runner = runner_for(server, tmp_path, names, timeout=0.4)
    summary = runner.run(names)
    recs = {r["name"]: r for r in read_records(tmp_path / "out.jsonl")}
    assert sorted(recs) == names
    assert recs["c0"]["label"] == "happy" and recs["c0"]["attempts"] == 2 and server.count["c0"] == 2
    assert recs["c1"]["label"] == "happy" and recs["c1"]["attempts"] == 2 and server.success["c1"] == 1
    assert recs["c2"]["label"] is None and recs["c2"]["error_type"] == "parse" and recs["c2"]["error"]
    assert recs["c2"]["raw"].startswith("I would rather not say")
    assert recs["c3"]["label"] == "happy" and recs["c3"]["error"] is None and recs["c3"]["confidence"] == 4
    assert recs["c5"]["error_type"] == "blocked" and "content_filter" in recs["c5"]["error"]
    assert summary["ok"] == 4 and summary["parse_fail"] == 2 and summary["transport_fail"] == 0
    for r in recs.values():  # the teacher-file fields are all there
        assert {"name", "teacher", "label", "scores", "confidence", "description"} <= set(r)
        assert r["teacher"] == "openai-test-vlm-text" and r["backend"] == "openai" and r["n_samples"] == 1
    assert abs(sum(recs["c0"]["scores"].values()) - 1) < 1e-6

    # a rerun asks nothing (the parse failure is kept); --retry_failed asks c2 and c5 again, and only them
    before = dict(server.count)
    assert runner_for(server, tmp_path, names).run(names)["asked"] == 0
    assert dict(server.count) == before
    again = runner_for(server, tmp_path, names, retry_failed=True).run(names)
    assert again["asked"] == 2 and server.count["c2"] == before["c2"] + 1 and server.count["c0"] == before["c0"]
    recs = read_records(tmp_path / "out.jsonl")
    assert sorted(r["name"] for r in recs) == names


def test_transport_failures_are_recorded_and_asked_again(server, tmp_path):
    names = ["t0", "t1"]
    server.script = {"t0": [("status", 503, {})] * 3}
    summary = runner_for(server, tmp_path, names, max_retries=2).run(names)
    assert summary["transport_fail"] == 1 and summary["ok"] == 1
    rec = {r["name"]: r for r in read_records(tmp_path / "out.jsonl")}["t0"]
    assert rec["error_type"] == "transport" and "503" in rec["error"] and rec["attempts"] == 3
    # the next run asks t0 again (the server answers now), and the file keeps one record per clip
    summary = runner_for(server, tmp_path, names).run(names)
    assert summary["asked"] == 1 and summary["ok"] == 1
    recs = read_records(tmp_path / "out.jsonl")
    assert sorted(r["name"] for r in recs) == names and all(r["label"] == "happy" for r in recs)


def test_unauthorised_key_stops_the_run_and_is_never_logged(server, tmp_path, monkeypatch):
    """(e) a 401 aborts the run with a clear message; (g) the key is in no log, message, URL or output."""
    monkeypatch.setenv("MY_GEMINI_KEY", SECRET)
    names = [f"k{i}" for i in range(30)]
    server.expect_key = "another-key"
    log, stream = make_log()
    backend = GeminiBackend("gemini-test", api_key_env="MY_GEMINI_KEY", base_url=server.url)
    with pytest.raises(AuthError) as err:
        runner_for(server, tmp_path, names, backend=backend, workers=2, log=log).run(names)
    msg = str(err.value)
    assert "401" in msg and "$MY_GEMINI_KEY" in msg and SECRET not in msg
    assert len(server.requests) <= 4, "the run went on after the key was refused"
    # a good key: a 429 (logged at DEBUG) then answers
    server.expect_key = SECRET
    good = [f"g{i}" for i in range(5)]
    server.script = {"g0": [("status", 429, {"Retry-After": "0"})]}
    summary = runner_for(server, tmp_path, good, backend=backend, log=log).run(good)
    assert summary["ok"] == 5
    gen = [r for r in server.requests if r[2].endswith(":generateContent")]
    assert all(SECRET not in r[2] for r in gen)
    assert all(r[4].get("x-goog-api-key") == SECRET for r in gen[-5:])
    assert "retry 1/3" in stream.getvalue() and "401" in stream.getvalue()
    assert SECRET not in stream.getvalue()
    assert SECRET not in (tmp_path / "out.jsonl").read_text()


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(DataError, match="NO_SUCH_KEY_VAR"):
        GeminiBackend("gemini-test", api_key_env="NO_SUCH_KEY_VAR")


def test_gemini_uploads_large_media_and_inlines_small_ones(server, tmp_path, monkeypatch):
    """(f) past the inline threshold a video goes through the resumable Files API and is deleted after."""
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    vdir = tmp_path / "video"
    vdir.mkdir()
    big, small = os.urandom(3000), os.urandom(100)
    (vdir / "big.mp4").write_bytes(big)
    (vdir / "small.mp4").write_bytes(small)
    names = ["big", "small", "novideo"]
    source = MediaSource(("video",), video_dir=str(vdir), subtitles=subtitles(names))
    backend = GeminiBackend("gemini-test", base_url=server.url, inline_max_mb=0.002, poll_interval=0.01)
    summary = runner_for(server, tmp_path, names, backend=backend, source=source).run(names)
    recs = {r["name"]: r for r in read_records(tmp_path / "out.jsonl")}
    assert recs["big"]["label"] == "happy" and recs["small"]["label"] == "happy"
    assert recs["novideo"]["error_type"] == "media" and "no media" in recs["novideo"]["error"]
    assert summary["other_fail"] == 1 and recs["big"]["media"] == ["video", "subtitle"]
    assert len(server.uploads) == 1
    up = next(iter(server.uploads.values()))
    assert up["data"] == big and up["mime"] == "video/mp4" and up["key"] == SECRET
    bodies = {r[3]: r[5] for r in server.requests if r[3]}
    big_parts, small_parts = bodies["big"]["contents"][0]["parts"], bodies["small"]["contents"][0]["parts"]
    assert big_parts[0]["file_data"]["file_uri"].endswith("/v1beta/files/f0") and "inline_data" not in big_parts[0]
    assert small_parts[0]["inline_data"]["mime_type"] == "video/mp4"
    import base64
    assert base64.b64decode(small_parts[0]["inline_data"]["data"]) == small
    assert "CLIP:small" in small_parts[-1]["text"] and server.deleted == ["f0"]


def test_openai_request_carries_frames_video_and_audio(server, tmp_path):
    names = ["m0"]
    for sub in ("video", "audio", "frames/m0"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "video" / "m0.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (tmp_path / "audio" / "m0.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    for i in range(12):
        tiny_png(tmp_path / "frames" / "m0" / f"frame_{i}.png", seed=i)
    source = MediaSource(("video", "frames", "audio"), str(tmp_path / "video"), str(tmp_path / "audio"),
                         str(tmp_path / "frames"), max_frames=3, subtitles=subtitles(names))
    assert runner_for(server, tmp_path, names, source=source).run(names)["ok"] == 1
    content = server.requests[-1][5]["messages"][0]["content"]
    kinds = [c["type"] for c in content]
    assert kinds == ["video_url", "image_url", "image_url", "image_url", "input_audio", "text"]
    assert content[0]["video_url"]["url"].startswith("data:video/mp4;base64,")
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,iVBORw0KGgo")
    assert content[4]["input_audio"]["format"] == "wav"
    assert "CLIP:m0" in content[-1]["text"]
    # frames are picked evenly, in natural order (frame_2 before frame_10)
    picked = [os.path.basename(p.path) for p in source.find("m0").items if p.kind == "image"]
    assert picked == ["frame_2.png", "frame_6.png", "frame_10.png"]
    assert even_subsample(list(range(10)), 4) == [1, 3, 6, 8]


def test_self_consistency_takes_the_majority(server, tmp_path):
    """(i) k=3 answers (happy, sad, happy) -> happy, agreement 2/3, confidence 5 x 2/3."""
    names = ["s0"]
    server.answers = {"s0": [answer_json("happy", 5), answer_json("sad", 3), answer_json("happy", 4)]}
    runner_for(server, tmp_path, names, samples=3).run(names)
    rec = read_records(tmp_path / "out.jsonl")[0]
    assert rec["label"] == "happy" and rec["confidence_source"] == "agreement"
    assert rec["agreement"] == pytest.approx(2 / 3) and rec["confidence"] == pytest.approx(5 * 2 / 3)
    assert isinstance(rec["raw"], list) and len(rec["raw"]) == 3 and rec["n_samples"] == 3
    assert rec["scores"]["happy"] > rec["scores"]["sad"] > rec["scores"]["angry"]
    assert rec["teacher"].endswith("-sc3") and rec["usage"] == {"input": 150, "output": 60}
    assert all(r[5]["temperature"] == 1.0 for r in server.requests)
    # a tie goes to the label with the higher mean score; unlabelled answers do not vote
    parsed = [{"label": "sad", "scores": {"sad": 0.9, "happy": 0.1}}, {"label": "happy", "scores": {"happy": 0.6,
              "sad": 0.4}}, {"label": None, "error": "no JSON"}]
    agg = aggregate_answers(parsed, LABELS)
    assert agg["label"] == "sad" and agg["agreement"] == 0.5 and "1 of 3 answers had no label" in agg["warnings"]
    with pytest.raises(DataError, match="temperature"):
        runner_for(server, tmp_path, names, samples=3, temperature=0.0)


def test_rpm_limit_spaces_the_requests(server, tmp_path):
    """(j) 600 requests a minute over 3 threads: at least 0.1 s between request starts."""
    names = [f"r{i}" for i in range(6)]
    runner_for(server, tmp_path, names, rpm=600, workers=3).run(names)
    times = sorted(r[0] for r in server.requests)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) == 6 and min(gaps) > 0.06 and times[-1] - times[0] > 0.49, gaps


def test_cut_last_line_is_removed_and_foreign_lines_stop(tmp_path):
    out = tmp_path / "t.jsonl"
    good = record_line({"name": "a", "label": "happy", "error": None, "error_type": None})
    out.write_bytes(good + b'{"name": "b", "lab')
    state = read_output(str(out))
    assert state.truncated and list(state.records) == ["a"]
    appender, kept, redo = open_output(str(out))
    appender.close()
    assert out.read_bytes() == good and list(kept) == ["a"]
    out.write_bytes(b"hello\n" + good)
    with pytest.raises(DataError, match="line"):
        open_output(str(out))


def test_subtitle_block_and_placeholder():
    assert with_subtitle("P", None) == "P"
    assert "<<<\nhi there\n>>>" in with_subtitle("P", "hi there")
    assert with_subtitle("A {SUBTITLE} B", "x") == "A x B"
    assert "视频字幕" in with_subtitle("P", "你好", lang="zh")


def _cli(server, tmp_path, names, *extra):
    env = dict(os.environ, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env.pop("OPENAI_API_KEY", None)
    return [sys.executable, "preprocess/query_teacher.py", "--names", str(tmp_path / "names.csv"),
            "--subtitles", str(tmp_path / "subs.csv"), "--media", "none", "--backend", "openai",
            "--base_url", server.url + "/v1", "--model", "test-vlm", "--emo_rule", "MER",
            "--out", str(tmp_path / "teachers" / "t.jsonl"), "--quiet", "--workers", "4", "--backoff", "0.01",
            *extra], dict(cwd=REPO, env=env)


def _write_lists(tmp_path, names):
    (tmp_path / "names.csv").write_text("name\n" + "\n".join(names) + "\n")
    (tmp_path / "subs.csv").write_text("name,english\n" + "\n".join(f"{n},{s}" for n, s in subtitles(names).items()))


def test_kill_and_resume_loses_nothing_and_pays_nothing_twice(server, tmp_path):
    """(h) SIGKILL half-way, a half line appended, a rerun: one record per clip, no clip answered twice."""
    names = [f"n{i:02d}" for i in range(40)]
    _write_lists(tmp_path, names)
    out = tmp_path / "teachers" / "t.jsonl"
    server.delay, server.gate_after = 0.02, 15  # 15 answers, then requests hang until the gate opens
    cmd, kw = _cli(server, tmp_path, names)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= 15:
            break
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        time.sleep(0.02)
    assert out.read_bytes().count(b"\n") == 15 and sum(server.success.values()) == 15
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    with open(out, "ab") as f:
        f.write(b'{"name": "n39", "teacher": "t", "lab')
    server.gate_after = None
    server.gate.set()
    while server.active:  # requests of the killed run notice the hang-up and are not answered
        time.sleep(0.01)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "cut short" in r.stderr and "15 already answered" in r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("openai-test-vlm-text: asked 25 clips (ok 25")
    recs = read_records(out)
    assert sorted(r["name"] for r in recs) == names and all(r["label"] == "happy" for r in recs)
    assert max(server.success.values()) == 1 and sum(server.success.values()) == 40


def test_cli_dry_run_prints_the_request_and_sends_nothing(server, tmp_path):
    names = ["d0", "d1"]
    _write_lists(tmp_path, names)
    (tmp_path / "frames" / "d0").mkdir(parents=True)
    tiny_png(tmp_path / "frames" / "d0" / "0001.png")
    cmd, kw = _cli(server, tmp_path, names, "--dry_run")
    cmd[cmd.index("--media") + 1] = "frames"
    cmd += ["--frames_dir", str(tmp_path / "frames")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "POST " + server.url + "/v1/chat/completions" in r.stdout
    assert "<base64, " in r.stdout and "CLIP:d0" in r.stdout and not server.requests
    body = json.loads(r.stdout[r.stdout.index("\n{") + 1:])
    assert body["messages"][0]["content"][0]["type"] == "image_url"
    # a missing key variable named on the command line is a clear error (exit 2)
    cmd, kw = _cli(server, tmp_path, names, "--api_key_env", "NO_SUCH_KEY_VAR")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
    assert r.returncode == 2 and "NO_SUCH_KEY_VAR" in r.stderr and not server.requests


def test_the_client_keeps_going_when_requests_are_rejected(server, tmp_path):
    """A 400 is recorded (not retried) and kept on a rerun; many failures in a row stop the run."""
    names = [f"b{i}" for i in range(8)]
    server.script = {"b0": [("status", 400, {})]}
    summary = runner_for(server, tmp_path, names).run(names)
    rec = {r["name"]: r for r in read_records(tmp_path / "out.jsonl")}["b0"]
    assert rec["error_type"] == "request" and rec["attempts"] == 1 and summary["other_fail"] == 1
    assert runner_for(server, tmp_path, names).run(names)["asked"] == 0
    from teachers.client import AbortRun
    more = [f"x{i}" for i in range(10)]
    server.script = {n: [("status", 500, {})] * 10 for n in more}
    with pytest.raises(AbortRun, match="in a row"):
        runner_for(server, tmp_path, more, max_retries=0, max_consecutive_failures=3, workers=1).run(more)
    assert server.count["x9"] == 0  # stopped after 3 (+ the one in flight), not after 10
    assert 3 <= len([r for r in read_records(tmp_path / "out.jsonl") if r["name"].startswith("x")]) <= 4


def test_replies_without_an_answer_are_blocked_records_not_crashes(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    g = GeminiBackend("gemini-test")
    blocked = g.parse_response({"candidates": [{"finishReason": "SAFETY", "safetyRatings": []}]})
    assert blocked.blocked == "empty answer (finishReason SAFETY)" and blocked.text == ""
    assert g.parse_response({"promptFeedback": {"blockReason": "OTHER"}}).blocked == "prompt blocked: OTHER"
    thought = g.parse_response({"candidates": [{"content": {"parts": [{"text": "hmm", "thought": True},
                                                                      {"text": "{\"label\": \"sad\"}"}]},
                                                "finishReason": "MAX_TOKENS"}]})
    assert thought.text == '{"label": "sad"}' and thought.blocked is None and "MAX_TOKENS" in thought.warnings[0]
    o = OpenAIBackend("http://127.0.0.1:1/v1", "m")
    assert o.parse_response({"choices": []}).blocked == "no choice in the reply"
    refusal = o.parse_response({"choices": [{"message": {"content": None, "refusal": "I can't"}}]})
    assert refusal.blocked == "refusal: I can't"
    from teachers.client import _google_retry_delay, _parse_retry_after
    assert _parse_retry_after("3") == 3.0 and _parse_retry_after("soon") is None
    assert _google_retry_delay(json.dumps({"error": {"details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}).encode()) == 37.0
