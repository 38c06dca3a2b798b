#!/usr/bin/env python3
"""Checks the `iris tokenize` and `iris detokenize` subcommands end to end against the
reference outputs of Hugging Face's JavaScript tokenizers (written by
reference/make_reference.mjs): ids of encode(text) with special tokens, and decode(ids)
with special tokens kept and the config's clean_up_tokenization_spaces applied (as
transformers' tokenizer.decode does). Entries of known_divergences.json are skipped and counted.

usage: check_cli.py IRIS CORPUS REF_OUT_DIR KNOWN_DIVERGENCES NAME [NAME ...]
"""
import json
import os
import subprocess
import sys


def main():
    iris, corpus, ref_dir, known_path, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
    texts = [json.loads(l) for l in open(corpus, encoding="utf-8") if l.strip()]
    texts = [t if isinstance(t, str) else t.get("text") for t in texts]
    known = {(e["tokenizer"], e["text"]) for e in json.load(open(known_path))["entries"]}
    manifest = {m["name"]: m["dir"] for m in json.load(open(os.path.join(ref_dir, "manifest.json")))}
    passed = failed = skipped = 0
    for name in names:
        refs = [json.loads(l) for l in open(os.path.join(ref_dir, name + ".jsonl"), encoding="utf-8")]
        assert len(refs) == len(texts), f"{name}: {len(refs)} reference lines for {len(texts)} texts"
        model = manifest[name]
        inp = "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts)
        tok = subprocess.run([iris, "tokenize", "--model", model, "--jsonl"], input=inp.encode(),
                             capture_output=True)
        if tok.returncode != 0:
            print(f"FAIL {name}: iris tokenize exit {tok.returncode}: {tok.stderr.decode()[:300]}")
            failed += 1
            continue
        got_ids = [json.loads(l)["ids"] for l in tok.stdout.decode().splitlines()]
        ids_in = "".join(json.dumps(r["ids"]) + "\n" for r in refs)
        det = subprocess.run([iris, "detokenize", "--model", model, "--jsonl"], input=ids_in.encode(),
                             capture_output=True)
        if det.returncode != 0:
            print(f"FAIL {name}: iris detokenize exit {det.returncode}: {det.stderr.decode()[:300]}")
            failed += 1
            continue
        got_text = [json.loads(l) for l in det.stdout.decode().splitlines()]
        for i, (t, r) in enumerate(zip(texts, refs)):
            if (name, t) in known:
                skipped += 1
                continue
            want_text = r["decode_hf"]
            ok = got_ids[i] == r["ids"] and got_text[i] == want_text
            if ok:
                passed += 1
            else:
                failed += 1
                print(f"FAIL {name} text #{i} {t[:40]!r}: ids {got_ids[i][:12]} vs {r['ids'][:12]}; "
                      f"decode {got_text[i][:40]!r} vs {want_text[:40]!r}")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(0 if failed == 0 and passed > 0 else 1)


if __name__ == "__main__":
    main()
