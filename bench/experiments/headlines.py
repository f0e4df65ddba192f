"""Topics from texts of other shapes: BBC's headlines, first paragraphs, or articles in a web page's boilerplate.

    python bench/experiments/headlines.py [--part title|lead|whole|page] [--seeds 0,1,2]
                                          [--variants '{"name": {"model": {...}}}']
                                          [--out bench/results/archive/headlines-title.json]

The quality suite's topical collections are whole articles and posts (Lee, newsgroups, BBC); a team's
own collection of titles, questions or one-paragraph abstracts is another kind: a few words to a few
dozen per text. This cuts each BBC article to its headline (the first line) or its first paragraph,
trains vecjob on those texts alone with the default settings for each training seed (and each variant,
seed 0 only), and scores vecjob, TF-IDF, LSA and all-MiniLM-L6-v2 with `bench/quality.py`'s probe
(5-fold cross-validated over all 2,225 texts) and its k-means NMI (k = 5).

`--part page` keeps each article whole inside the same header and footer, as a scraper's text of a
news site's pages holds them (menus, a cookie notice, sharing and legal links; only the "published"
line differs from page to page): a collection in which a quarter of every document's words say nothing
of it. `--part whole` is the articles as they are, scored the same way, to compare with.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import quality  # noqa: E402
from common import RowsFile  # noqa: E402


PAGE_HEADER = ("Skip to main content. Accessibility help. Sign in. Home Latest Local Weather Podcasts Newsletters "
               "Search. We use cookies to give you the best online experience. Please let us know if you agree "
               "to all of these cookies. Yes, I agree. No, take me to settings. Share this page. Copy link. "
               "About sharing. Published {hours} hours ago.")
PAGE_FOOTER = ("More on this story. Related internet links. The site is not responsible for the content of "
               "external sites. Read about our approach to external linking. Top stories. Most read. Terms of "
               "use. About us. Privacy policy. Cookies. Accessibility help. Parental guidance. Contact us. Get "
               "personalised newsletters. Follow us on social media. Download the app. Copyright 2026.")


def cut(text: str, part: str, row: int = 0) -> str:
    if part == "whole":
        return text
    if part == "page":
        return "\n".join([PAGE_HEADER.format(hours=1 + row % 23), text, PAGE_FOOTER])
    paragraphs = [p.strip() for p in text.split("\n") if p.strip()]
    return paragraphs[0] if part == "title" else (paragraphs[1] if len(paragraphs) > 1 else paragraphs[0])


def scores(x, y) -> dict:
    return {"acc": quality.cv_probe(x, y), "nmi": quality.cluster_scores(x, y)["nmi"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("title", "lead", "whole", "page"), default="title")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="{}", help="JSON: name → overrides, each trained with seed 0")
    ap.add_argument("--baselines", default="tfidf,lsa,minilm")
    ap.add_argument("--lsa-seeds", default="0", help="seeds of LSA's randomised SVD, a row each (the suite takes "
                    "the median of 0,1,2)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = Path(args.out or REPO / "bench" / "results" / "archive" / f"headlines-{args.part}.json")
    bbc = pl.read_parquet(quality.DATA / "bbc_news.parquet")
    df = bbc.with_columns(text=pl.Series([cut(t, args.part, i) for i, t in enumerate(bbc["text"].to_list())]))
    scratch = Path(tempfile.mkdtemp(prefix="vecjob-headlines-"))
    path = scratch / f"bbc-{args.part}.parquet"
    df.write_parquet(path)
    y, texts = df["label"].to_numpy(), df["text"].to_list()
    words = [len(t.split()) for t in texts]
    result = RowsFile(out, collection=f"BBC, each article as its {args.part}", texts=len(texts),
                      words_per_text_median=float(np.median(words)))

    baselines = {"tfidf": ("TF-IDF 1-2gram", quality.tfidf_vectors), "lsa": ("LSA 128", quality.lsa_vectors),
                 "minilm": ("all-MiniLM-L6-v2", quality.minilm_vectors)}
    for key in filter(None, args.baselines.split(",")):
        name, fn = baselines[key]
        if key == "lsa":
            for seed in [int(s) for s in args.lsa_seeds.split(",") if s]:
                result.add({"method": name, "seed": seed, **scores(fn(texts, seed), y)})
        else:
            result.add({"method": name, **scores(fn(texts), y)})
    runs = [("vecjob default", {}, int(s)) for s in args.seeds.split(",") if s]
    runs += [(f"vecjob {name}", overrides, 0) for name, overrides in json.loads(args.variants).items()]
    for method, overrides, seed in runs:
        encoded, info = quality.vecjob_vectors(path, scratch, "denoising", overrides, seed)
        vectors = encoded["auto"]
        result.add({"method": method, "seed": seed, "overrides": overrides, **scores(vectors, y),
              "train_s": info["train_s"], "stop_reason": info["stop_reason"], "best_round": info["best_round"],
              "epochs_seen": info["epochs_seen"]})
    for metric in ("acc", "nmi"):
        default = [r[metric] for r in result.rows if r["method"] == "vecjob default"]
        result.data[f"vecjob_default_median_{metric}"] = statistics.median(default) if default else None
    result.write()
    print({k: v for k, v in result.data.items() if k.startswith("vecjob_default_median")})


if __name__ == "__main__":
    main()
