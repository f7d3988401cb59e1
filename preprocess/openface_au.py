"""OpenFace 2.x FeatureExtraction CSVs (one per clip) -> one (T, 35) AU sequence per clip.

    python preprocess/openface_au.py --src openface_csv/ --out features/mer2025/openface-au-FRM [--overwrite]

Input (under --src): ``<clip>.csv`` as written by OpenFace's FeatureExtraction (header names with a
leading space, e.g. `` AU01_r``; gaze, pose and landmark columns may be present or not). Needed columns:
``success``, the 17 intensities ``AU.._r`` and the 18 presences ``AU.._c`` (FeatureExtraction writes them
with ``-aus``, or with no output-selection flag at all); ``face_id`` and ``frame`` are used when present.

Output (under --out): ``<clip>.npy``, float32 ``(T, 35)``: the 17 ``_r`` columns in the order of AU_R, then
the 18 ``_c`` columns in the order of AU_C (the layout of ``demo-openface-au-FRM``, see make_demo.py).
Frames with ``success == 0`` are dropped; where several faces are tracked the face with the most usable
frames is kept (ties: the lowest face_id), ordered by frame; frames with NaN AU values are dropped (and
counted). A clip with no usable frame gets no .npy (it is not zero-filled), and a file that cannot be
parsed never stops the run: both are listed in the summary and in ``<out>/openface_report.csv``
(name, status, frames, faces, reason; status is ok, skipped, empty or error). Clips whose .npy already
exists are skipped, so a rerun resumes; --overwrite converts them again. Exit status 0, or 1 when no clip
at all could be converted. Then register the folder in config.FEAT_AU_DICT as ``name: [35, out]``.
"""

import argparse
import sys
import time

import _paths  # noqa: F401
from common.errors import DataError
from extraction.openface_au import AU_C, AU_COLUMNS, AU_R, convert_clip, convert_folder, DIM, REPORT_NAME, summarize  # noqa: F401  (the library behind this script)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="folder of OpenFace FeatureExtraction CSVs, one <clip>.csv per clip")
    p.add_argument("--out", required=True, help="output folder of <clip>.npy (T, 35) files and openface_report.csv")
    p.add_argument("--num_workers", type=int, default=4, help="parallel reader threads")
    p.add_argument("--overwrite", action="store_true", help="convert clips whose .npy already exists again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    t0 = time.time()
    try:
        report = convert_folder(args.src, args.out, args.num_workers, args.overwrite, progress=not args.quiet)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summarize(report, args.out))
    print(f"done in {time.time() - t0:.1f}s")
    return 0 if report.status.isin(["ok", "skipped"]).any() else 1


if __name__ == "__main__":
    sys.exit(main())
