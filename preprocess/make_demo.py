"""Write the embedded demo data set: a small, MER2025-shaped, fully synthetic test bed.

    python preprocess/make_demo.py [--out features/demo] [--n_train 2000] [--n_unlabeled 6000] [--n_test 600]

Deterministic for a given --seed; takes seconds. What it writes (under --out):

  track1_train_disdim.csv   name,discrete,valence     labelled pool (MER's six labels, MER2025-like imbalance)
  unlabeled.csv             name                      unlabelled pool (3x the labelled one)
  unlabeled_truth.csv       name,discrete,valence     hidden truth of the unlabelled pool (pseudo-label precision)
  test.csv                  name                      test list
  test_labels.csv           name,discrete,valence     test truth, for scoring only
  sample_info.csv           per sample: split, which modalities carry the emotion, corrupted modality
  teachers/demo-vlm.jsonl   a simulated VLM teacher: label, scores, confidence 0-5, description
  <feature>/<name>.npy      the features registered in config.py under "demo-*"
  README.md                 this generating process and the realised statistics

The generating process (a fair test bed: no single feature solves it)
---------------------------------------------------------------------
1. Label y from the class prior (neutral .27, happy .21, angry .19, sad .15, worried .12, surprise .06);
   valence in [-5, 5] around a class mean.
2. Each modality (video, audio, text) carries the emotion for a sample with probability 0.6 / 0.55 / 0.6,
   at least one modality always does. A modality that does not carry it shows an uninformative latent.
3. Each modality sees the classes through its own 24-d prototypes, in which two pairs of classes are
   almost the same point (it cannot tell them apart):
       video: sad~worried, angry~neutral     audio: happy~surprise, sad~neutral     text: angry~worried, happy~neutral
   Every pair is separated by at least two modalities, so fusion can resolve what no modality can.
4. Latent z_m = strength * prototype[y] (if the modality carries) + N(0, 0.55^2), strength ~ U(0.6, 1.4),
   plus an 8-d nuisance (speaker/style) shared by all modalities of a sample.
5. Two encoders per modality turn z_m into features: tanh(W [z_m, nuisance] + b) + noise, with dims like the
   real encoders (512 / 1024 video, 1024 / 768 audio, 1024 / 768 text); the "large" one is less noisy.
6. 6% of samples have one modality corrupted (both of its features replaced by strong noise), as a black
   screen or a broken audio track would.
7. AU: OpenFace-like (T, 35) sequences, T ~ U(10, 96): 17 AU intensities (0-5) then 18 presence flags. When
   the face carries the emotion, each action unit of the class's pattern fires (probability 0.5) in a bump
   at a random time (e.g. sad: AU01, AU04, AU15, AU17; worried: AU01, AU02, AU04, AU20), so the AU expert
   separates sad from worried, which the video embeddings cannot. Blinks (AU45) and baseline noise
   everywhere; a corrupted video also breaks the AU tracking.
8. Teacher (a simulated VLM): correct with probability 0.55 / 0.72 / 0.86 when 1 / 2 / 3 modalities carry
   the emotion (about 70% overall); wrong answers lean towards neutral and worried (a known VLM bias).
   Confidence 0-5 is higher when it is right; scores are a softmax peaked on its label with some mass on the
   truth; the description strings together cue phrases that match its label (when it is wrong, a modality
   carrying the emotion shows the true class's cue with probability 0.35). The per-emotion scores are also
   the 'demo-vlm-scores' feature.
"""

import argparse
import os
import sys
import time

import _paths  # noqa: F401
import config  # noqa: E402
from corpora.demo import describe, generate, write  # noqa: F401  (the library behind this script)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(config.FEATURE_ROOT, "demo"))
    p.add_argument("--n_train", type=int, default=2000)
    p.add_argument("--n_unlabeled", type=int, default=6000)
    p.add_argument("--n_test", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.time()
    table, feats, au, teacher = generate(args.n_train, args.n_unlabeled, args.n_test, args.seed)
    write(args.out, table, feats, au, teacher)
    stats = describe(table, teacher)
    doc = __doc__.split("The generating process", 1)[1]
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(f"# Demo data set (seed {args.seed})\n\nWritten by `python preprocess/make_demo.py`.\n\n"
                f"## The generating process{doc}\n## Realised statistics\n\n{stats}\n")
    print(stats)
    n_files = len(table) * (len(feats) + 1)
    print(f"wrote {len(table)} samples, {n_files} feature files to {args.out} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
