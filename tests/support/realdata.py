"""The real metadata files as their authors published them (../shared/realdata, see its
SOURCES.md): verbatim excerpts that tests build fixtures from, and the whole files for tests that
skip with a message when the folder is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_PLACES = [Path(p) for p in (os.environ.get("QBENCH_REALDATA"),) if p] + [
    HERE.parent.parent / "shared" / "realdata", Path("/work/shared/realdata")]


def realdata(name: str) -> Path:
    """A whole real file, or a skip naming where it was looked for."""
    for place in _PLACES:
        if (place / name).is_file():
            return place / name
    pytest.skip(f"real file {name} not found in {', '.join(map(str, _PLACES))} "
                "(set QBENCH_REALDATA to the shared/realdata folder)")


# subpic/koniq metadata/koniq10k_distributions_sets.csv @1c271570: header and lines verbatim
# (LF line ends; MOS on 0-100, SD on the 1-5 vote scale).
KONIQ_SETS_HEADER = "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set"
KONIQ_SETS_LINES = [
    "10004473376.jpg,0.0,0.0,0.238095238095,0.695238095238,0.0666666666667,105,77.3836206897,0.527277894494,training",
    "10007357496.jpg,0.0,0.03125,0.46875,0.489583333333,0.0104166666667,96,68.7285714286,0.580003024795,test",
    "10007903636.jpg,0.0104166666667,0.0,0.208333333333,0.760416666667,0.0208333333333,96,78.6285714286,0.527219618675,training",
    "10009096245.jpg,0.0,0.0,0.192660550459,0.688073394495,0.119266055046,109,77.24375,0.556217750099,training",
    "100117038.jpg,0.0,0.01,0.21,0.72,0.06,100,75.1125,0.532859638122,training",
    "10012398043.jpg,0.0,0.0679611650485,0.533980582524,0.388349514563,0.00970873786408,103,65.1495327103,0.619192992472,training",
    "121123359.jpg,0.0,0.0,0.05,0.59,0.36,100,88.24375,0.563090318751,test",
    "213906996.jpg,0.0,0.0,0.0660377358491,0.622641509434,0.311320754717,106,86.6625,0.565875987671,test",
]
# The official test images Q-Align's test_koniq.json leaves out (SOURCES.md).
KONIQ_QALIGN_EXCLUDED = ("121123359.jpg", "213906996.jpg", "3483143101.jpg", "3632417985.jpg",
                         "44009500.jpg")

# lcysyzxdxc/AGIQA-3k-Database data.csv @a1b51eb5: first lines verbatim, CRLF line ends.
AGIQA_LINES = [
    "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align",
    "AttnGAN_normal_000.jpg,statue of a man,,,,0.965602553,0.223270101,0.40889324,0.615607722",
    "AttnGAN_normal_001.jpg,a tray of sushi,,,,1.361853219,0.645422466,0.428796637,0.667071153",
]

# Q-Future/Q-Align playground/data/test_jsons @14dfdffb: first records verbatim.
QALIGN_RECORDS = {
    "test_koniq.json": [
        {"id": "10007357496.jpg->68.7285714286", "image": "koniq/10007357496.jpg",
         "conversations": [{"from": "human", "value": "How would you rate the quality of this image?\n<|image|>"},
                           {"from": "gpt", "value": "The quality of the image is good."}],
         "gt_score": 68.7285714286},
        {"id": "10020766793.jpg->81.50625", "image": "koniq/10020766793.jpg",
         "conversations": [{"from": "human", "value": "Can you rate the quality of this picture?\n<|image|>"},
                           {"from": "gpt", "value": "The quality of the image is excellent."}],
         "gt_score": 81.50625}],
    "test_spaq.json": [
        {"id": "05638.jpg->45.75", "image": "spaq/05638.jpg",
         "conversations": [{"from": "human", "value": "Could you evaluate the quality of this image?\n<|image|>"},
                           {"from": "gpt", "value": "The quality of the image is fair."}],
         "gt_score": 45.75},
        {"id": "03327.jpg->65.88", "image": "spaq/03327.jpg",
         "conversations": [{"from": "human", "value": "Can you rate the quality of this picture?\n<|image|>"},
                           {"from": "gpt", "value": "The quality of the image is good."}],
         "gt_score": 65.88}],
    "test_kadid.json": [   # no gt_score: the score is only inside `id`
        {"id": "I66_01_01.png->4.63", "image": "kadid10k/I66_01_01.png",
         "conversations": [{"from": "human", "value": "How would you judge the quality of this image?\n<|image|>"},
                           {"from": "gpt", "value": "The quality of the image is excellent."}]},
        {"id": "I66_01_02.png->4.48", "image": "kadid10k/I66_01_02.png",
         "conversations": [{"from": "human", "value": "Could you evaluate the quality of this image?\n<|image|>"},
                           {"from": "gpt", "value": "The quality of the image is excellent."}]}],
    "csiq.json": [
        {"image": "csiq/dst_imgs/awgn/1600.AWGN.1.png", "gt_score": 0.062},
        {"image": "csiq/dst_imgs/contrast/1600.contrast.1.png", "gt_score": 0.062}],
    "livec.json": [   # key img_path, not image
        {"img_path": "livec/t1.bmp", "gt_score": 63.963406174124174},
        {"img_path": "livec/t2.bmp", "gt_score": 25.335306406685238}],
    "agi.json": [     # gt_score as a string
        {"img_path": "agi-cgi/AttnGAN_normal_000.jpg", "gt_score": "0.965602553"},
        {"img_path": "agi-cgi/AttnGAN_normal_001.jpg", "gt_score": "1.361853219"}],
}
