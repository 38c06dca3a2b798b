#!/usr/bin/env python3
"""The report of scripts/gpu-check.sh: OUT/report.json (machine-readable) and OUT/report.md,
rewritten after every stage so that a run cut short still says what passed, what failed
(with the failing cases' messages and numbers) and what did not run.

usage:
  gpu_check_report.py OUT init STAGE...                 every planned stage, "not run"
  gpu_check_report.py OUT fact KEY VALUE                 an environment fact
  gpu_check_report.py OUT stage NAME STATUS SECONDS SUMMARY [LOG...]
        STATUS: passed | failed | not run | running (started, not finished). Catch2 console logs are mined for
        their failing cases (name, location, expression, INFO messages); bench logs for
        their RESULT lines.
  gpu_check_report.py OUT case STAGE NAME STATUS SECONDS [LOG]   one case re-run alone
  gpu_check_report.py OUT finish EXIT_CODE [WHY_THE_REST_DID_NOT_RUN]
"""
import json
import os
import re
import sys
import time


def load(out):
    path = os.path.join(out, "report.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "facts": {},
            "stages": [], "result": "incomplete (the run is in progress or was cut short)"}


def save(out, rep):
    tmp = os.path.join(out, "report.json.tmp")
    with open(tmp, "w") as f:
        json.dump(rep, f, indent=1)
    os.replace(tmp, os.path.join(out, "report.json"))
    tmp = os.path.join(out, "report.md.tmp")
    with open(tmp, "w") as f:
        f.write(markdown(rep))
    os.replace(tmp, os.path.join(out, "report.md"))


def stage_of(rep, name):
    for s in rep["stages"]:
        if s["name"] == name:
            return s
    s = {"name": name, "status": "not run"}
    rep["stages"].append(s)
    return s


SEP = re.compile(r"^-{20,}$")


def catch2_failures(text, limit=20):
    """Failing assertions from Catch2's console reporter: test case (and sections), the
    location, the expression and the INFO/CHECK messages that carry the case's numbers."""
    lines = text.splitlines()
    fails = []
    i = 0
    while i < len(lines):
        if SEP.match(lines[i]) and i + 1 < len(lines) and not SEP.match(lines[i + 1]):
            j = i + 1
            header = []
            while j < len(lines) and not SEP.match(lines[j]):
                header.append(lines[j].strip())
                j += 1
            # the body runs until the next header separator or the summary line
            k = j + 1
            body = []
            while k < len(lines) and not (SEP.match(lines[k]) and k + 1 < len(lines) and
                                          not SEP.match(lines[k + 1]) and
                                          not lines[k + 1].startswith("=")):
                if lines[k].startswith("====="):
                    break
                body.append(lines[k])
                k += 1
            joined = "\n".join(body)
            if "FAILED" in joined or "due to unexpected exception" in joined or "fatal error" in joined:
                fails.append({"case": " / ".join(h for h in header if h),
                              "detail": "\n".join(l.rstrip() for l in body if l.strip())[:3000]})
            i = k
        else:
            i += 1
    summary = [l for l in lines if re.match(r"^(test cases|All tests passed|No tests ran)", l)]
    crashed = not summary
    return fails[:limit], (summary[-2:] if summary else []), crashed


def bench_results(text):
    rows = []
    for l in text.splitlines():
        if l.startswith("RESULT "):
            try:
                rows.append(json.loads(l[len("RESULT "):]))
            except ValueError:
                pass
    return rows


def markdown(rep):
    out = ["# Iris GPU check", ""]
    out.append(f"Started {rep['started']}. **Result: {rep['result']}**")
    out.append("")
    if rep["facts"]:
        out += ["## Environment", "", "| fact | value |", "|---|---|"]
        for k, v in rep["facts"].items():
            v = str(v).replace("|", "\\|").replace("\n", "<br>")
            out.append(f"| {k} | {v} |")
        out.append("")
    out += ["## Stages", "", "| stage | status | seconds | summary |", "|---|---|---|---|"]
    for s in rep["stages"]:
        status = s["status"].upper() if s["status"] == "failed" else s["status"]
        summ = str(s.get("summary", "")).replace("|", "\\|").replace("\n", "<br>")
        out.append(f"| {s['name']} | {status} | {s.get('seconds', '')} | {summ} |")
    out.append("")
    for s in rep["stages"]:
        if s.get("failures") or s.get("cases") or s.get("bench"):
            out += [f"## {s['name']}", ""]
        for f in s.get("failures", []):
            out += [f"**FAILED: {f['case']}**", "", "```", f["detail"], "```", ""]
        if s.get("cases"):
            out += ["Re-run one case per process:", "", "| case | status | seconds | detail |",
                    "|---|---|---|---|"]
            for c in s["cases"]:
                d = c.get("detail", "").replace("|", "\\|").replace("\n", "<br>")[:600]
                out.append(f"| {c['name']} | {c['status']} | {c.get('seconds', '')} | {d} |")
            out.append("")
        if s.get("bench"):
            out += ["| run | prompt | TTFT ms | prefill tok/s | ~TFLOP/s | decode ms/token | "
                    "weights MB | KV MB/step | copy GB/s | roofline ms | % of roofline |",
                    "|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in s["bench"]:
                try:
                    out.append(
                        f"| {r['name']} | {r['prompt_tokens']} | {r['ttft_ms']:.1f} | "
                        f"{r['prefill_tokens_per_s']:.0f} | {r['prefill_tflops']:.1f} | "
                        f"{r['decode_ms_per_token']:.3f} | {r['weight_mb']:.0f} | "
                        f"{r['kv_mb_per_step']:.1f} | {r['copy_bandwidth_gbs']:.0f} | "
                        f"{r['roofline_ms']:.3f} | {100 * r['roofline_fraction']:.0f}% |")
                except (KeyError, TypeError, ValueError):
                    out.append(f"| {r.get('name')} | {json.dumps(r)} |")
            out += ["", "Roofline: (weight bytes + KV bytes at the average context) / measured "
                    "device-to-device copy bandwidth. Decode includes the per-step host work and "
                    "runs without CUDA graphs.", ""]
    out.append("Raw logs: raw/ (one per stage and per re-run case).")
    return "\n".join(out) + "\n"


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def main():
    out, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    rep = load(out)
    if cmd == "init":
        rep = load("/nonexistent")
        for name in args:
            stage_of(rep, name)
    elif cmd == "fact":
        rep["facts"][args[0]] = args[1]
    elif cmd == "stage":
        name, status, seconds, summary, logs = args[0], args[1], args[2], args[3], args[4:]
        s = stage_of(rep, name)
        s.update(status=status, seconds=float(seconds) if seconds else None, summary=summary)
        fails, bench = [], []
        for log in logs:
            text = read(log)
            f, catch_summary, crashed = catch2_failures(text)
            fails += f
            if catch_summary:
                s["summary"] = (summary + "; " if summary else "") + " / ".join(catch_summary)
            bench += [dict(r, name=r.get("name", os.path.basename(log))) for r in bench_results(text)]
        if fails:
            s["failures"] = fails
        if bench:
            s["bench"] = bench
        s["logs"] = [os.path.relpath(l, out) for l in logs]
    elif cmd == "case":
        stage, name, status, seconds = args[0], args[1], args[2], args[3]
        log = args[4] if len(args) > 4 else None
        s = stage_of(rep, stage)
        detail = ""
        if log:
            f, _, crashed = catch2_failures(read(log), limit=1)
            if f:
                detail = f[0]["detail"]
            elif status != "passed":
                detail = "\n".join(read(log).strip().splitlines()[-6:])
        s.setdefault("cases", []).append({"name": name, "status": status,
                                          "seconds": float(seconds), "detail": detail})
    elif cmd == "finish":
        code = int(args[0])
        if len(args) > 1:
            for s in rep["stages"]:
                if s["status"] == "not run" and not s.get("summary"):
                    s["summary"] = args[1]
        failed = [s["name"] for s in rep["stages"] if s["status"] == "failed"]
        notrun = [s["name"] for s in rep["stages"] if s["status"] == "not run"]
        if code == 0:
            rep["result"] = "PASSED" + (f" (not run: {', '.join(notrun)})" if notrun else "")
        else:
            rep["result"] = ("FAILED: " + ", ".join(failed) if failed else f"FAILED (exit {code})") + (
                f"; not run: {', '.join(notrun)}" if notrun else "")
        rep["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    else:
        sys.exit(f"unknown command {cmd}")
    save(out, rep)


if __name__ == "__main__":
    main()
