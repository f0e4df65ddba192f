"""Questions by the kind of answer they ask for: TREC's question classification, trained on by itself.

    python bench/experiments/questions.py --data DIR [--language en] [--seeds 0,1,2]
                                          [--baselines tfidf,lsa,doc2vec,minilm] [--baseline-seeds 0,1,2]
                                          [--variants '{"plain": {…}}']
                                          [--out bench/results/archive/questions-en.json]

The suite's collections are sorted by topic or sentiment; what a question asks for (a person, a
place, a number, a description...) is told by its few function words and their order ("how many",
"who", "where"), which a topic model leaves out. Li and Roth's TREC questions (Cogcomp, UIUC): the
5,500-question training file and the 500 of TREC 10, each labelled with one of six coarse classes.
They ship in no package here, so vecjob does not carry them: DIR holds `train_5500.label` and
`TREC_10.en.label` (one "CLASS:fine question" a line), and for `--language hi` a Hindi translation of
both, `train_5500.hi.label` and `TREC_10.hi.label` (`--baselines tokens` adds TF-IDF and LSA over
vecjob's words, which Hindi needs). This trains vecjob on every question of the two files with the
default settings for each training seed, fits TF-IDF, LSA and Doc2Vec (for each of --baseline-seeds)
on them, runs all-MiniLM-L6-v2 (English) on them, and scores each with `bench/quality.py`'s probe,
5-fold cross-validated over all questions, and its k-means NMI (k = 6). Medians over the seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import quality  # noqa: E402
from common import RowsFile, seeds  # noqa: E402

FILES = {"en": ("train_5500.label", "TREC_10.en.label"), "hi": ("train_5500.hi.label", "TREC_10.hi.label")}


def questions(folder: Path, language: str) -> pl.DataFrame:
    """id, text, label (the coarse class) of every question in the language's two files."""
    rows = []
    for name in FILES[language]:
        path = folder / name
        if not path.is_file():
            sys.exit(f"{path}: missing; --data names the folder of the data set's files ({', '.join(FILES[language])})")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            label, _, text = line.partition(" ")
            if ":" in label and text.strip():
                rows.append((len(rows), text.strip(), label.split(":")[0]))
    return pl.DataFrame(rows, schema=["id", "text", "label"], orient="row")


def tfidf_on_vecjob_tokens(texts: list[str]):
    """TF-IDF as the suite fits it (1-2-grams, min_df 2, sublinear tf) over the words vecjob's tokeniser
    cuts, punctuation left out: scikit-learn's token pattern cuts Devanagari words at their vowel signs
    (its \\w is Python's, which takes no combining mark), so on Hindi the suite's baselines would be
    scored on fragments of words."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from vecjob.tokenizer import tokenize_column

    cut = tokenize_column(pl.Series(texts, dtype=pl.String)).to_list()
    tokens = [[t for t in doc if t[0].isalnum()] for doc in cut]
    return TfidfVectorizer(tokenizer=lambda doc: doc, preprocessor=lambda doc: doc, token_pattern=None,
                           lowercase=False, ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="folder of the data set's files")
    ap.add_argument("--language", choices=sorted(FILES), default="en")
    quality.collection_flags(ap)
    ap.add_argument("--variants", default="{}", help='JSON: name → overrides, each trained with seed 0, as '
                    '\'{"plain": {"model": {"variant": "plain"}}}\'')
    ap.add_argument("--out", help="default: bench/results/archive/questions-LANGUAGE.json")
    args = ap.parse_args()
    out = args.out or str(REPO / "bench" / "results" / "archive" / f"questions-{args.language}.json")
    baselines = set(args.baselines.split(",")) - {""}
    df = questions(args.data, args.language)
    path = quality.collection_file(df, f"questions-{args.language}")
    texts, classes = df["text"].to_list(), df["label"].n_unique()
    result = RowsFile(out, collection=f"TREC questions ({args.language}), {df.height} questions, {classes} classes")
    score = quality.probe_scorer(result.add, df["label"].to_numpy(), clusters=True)
    rows: dict[str, list[dict]] = {}
    if "tokens" in baselines:
        from sklearn.decomposition import TruncatedSVD

        tfidf = tfidf_on_vecjob_tokens(texts)
        rows["TF-IDF 1-2gram on vecjob's words"] = [score("TF-IDF 1-2gram on vecjob's words", tfidf)]
        rows["LSA 128 on vecjob's words"] = [
            score("LSA 128 on vecjob's words", TruncatedSVD(quality.DIM, random_state=seed).fit_transform(tfidf),
                  seed=seed) for seed in seeds(args.baseline_seeds)]
    rows |= quality.score_collection(path, texts, score, seeds(args.seeds), baselines, seeds(args.baseline_seeds),
                                     json.loads(args.variants))
    result.data["medians"] = quality.medians(rows, ("acc", "nmi"))
    result.write()
    print(result.data["medians"])


if __name__ == "__main__":
    main()
