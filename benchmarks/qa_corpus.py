"""The QA benchmark's corpus: seven documents nobody can answer questions about without reading them.

``write_corpus(folder)`` writes, byte for byte the same on every run:

- ``annual_report_2025.pdf``: three pages, prose plus two ruled tables (segments, headcount);
- ``eastbrook_budget_2026.pdf``: two pages of tables set as aligned text columns, no ruling lines;
- ``speech_routing_paper.pdf``: a two-column paper (10 pt text, 10 pt gutter), facts in prose on pages 2-3;
- ``wind_generation_2025.pdf``: a bar chart (matplotlib image) whose values the page text also states;
- ``dunmore_memo_scan.pdf``: a memo rendered to a slightly skewed, noisy image, no text layer;
- ``tidewatch/``: a small Python repository (config defaults, CLI, alerts, README);
- ``parts_inventory.csv`` and ``product_council_notes.md``.

Figures repeat with small differences across years, departments and documents (2024 vs 2025
columns, a Kettering warehouse in two files) so that retrieval has to pick the right passage.
The questions live in ``qa_questions.json`` next to this file; :data:`SCANNED_TEXT` is the text
of the scanned page (it has no text layer to check against).

    python3 benchmarks/qa_corpus.py OUT_DIR
"""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pymupdf as fitz
from PIL import Image, ImageFilter

QUESTIONS_PATH = Path(__file__).with_name("qa_questions.json")
SEED = 1414
_FIXED_DATE = "D:20260105120000Z"
A4 = fitz.paper_rect("letter")


# -- shared layout helpers --------------------------------------------------------------------


def _box(page: fitz.Page, rect: fitz.Rect, text: str, size: float = 11, font: str = "helv", align: int = 0) -> float:
    """Text set into ``rect``; returns the y below it. Overflow is a bug in this generator, not a layout choice."""
    left = page.insert_textbox(rect, text, fontsize=size, fontname=font, align=align)
    if left < 0:
        raise ValueError(f"page {page.number + 1}: text does not fit its box ({-left:.0f} pt over): {text[:60]!r}")
    return rect.y1 - left


def _heading(page: fitz.Page, y: float, text: str, size: float = 14) -> float:
    page.insert_text((56, y), text, fontsize=size, fontname="hebo")
    return y + size * 0.8


def _para(page: fitz.Page, y: float, text: str, size: float = 11, x0: float = 56, x1: float = 556) -> float:
    return _box(page, fitz.Rect(x0, y, x1, y + 400), text, size) + 14


def _ruled_table(page: fitz.Page, top: float, rows: list[tuple[str, ...]], xs: list[float], h: float = 20) -> float:
    for i, row in enumerate(rows):
        y = top + i * h
        for j, cell in enumerate(row):
            page.draw_rect(fitz.Rect(xs[j], y, xs[j + 1], y + h), color=(0, 0, 0), width=0.7)
            font = "hebo" if i == 0 else "helv"
            if j == 0:
                page.insert_text((xs[j] + 5, y + 14), cell, fontsize=10, fontname=font)
            else:  # figures right-aligned, as in a printed report
                width = fitz.get_text_length(cell, fontname=font, fontsize=10)
                page.insert_text((xs[j + 1] - 6 - width, y + 14), cell, fontsize=10, fontname=font)
    return top + len(rows) * h + 18


def _unruled_table(page: fitz.Page, top: float, rows: list[tuple[str, ...]], xs: list[float], h: float = 16) -> float:
    """Columns aligned by position only: the first column left-aligned at ``xs[0]``, the rest right-aligned at ``xs[j]``."""
    for i, row in enumerate(rows):
        y = top + i * h
        font = "hebo" if i == 0 else "helv"
        for j, cell in enumerate(row):
            if j == 0:
                page.insert_text((xs[0], y), cell, fontsize=10, fontname=font)
            else:
                width = fitz.get_text_length(cell, fontname=font, fontsize=10)
                page.insert_text((xs[j] - width, y), cell, fontsize=10, fontname=font)
    return top + len(rows) * h + 10


def _save(doc: fitz.Document, path: Path, title: str) -> None:
    doc.set_metadata(
        {
            "title": title,
            "author": "kimidoc QA benchmark",
            "producer": "kimidoc qa_corpus",
            "creator": "kimidoc qa_corpus",
            "creationDate": _FIXED_DATE,
            "modDate": _FIXED_DATE,
        }
    )
    doc.save(path, garbage=4, deflate=True, no_new_id=True)


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


# -- (a) annual report: prose and ruled tables --------------------------------------------------

SEGMENTS = [  # segment, revenue 2025, revenue 2024, operating profit 2025, operating profit 2024 ($M)
    ("Offshore Sensors", 112.7, 101.3, 17.9, 14.2),
    ("Harbour Automation", 86.5, 79.8, 9.6, 8.1),
    ("Fleet Software", 71.3, 58.4, 12.4, 9.0),
    ("Service Contracts", 47.9, 48.4, 1.3, 2.2),
]
HEADCOUNT = [
    ("Engineering", 412, 371),
    ("Manufacturing", 538, 552),
    ("Sales & Marketing", 127, 119),
    ("Customer Support", 96, 88),
    ("Administration", 61, 58),
]


def annual_report(path: Path) -> None:
    doc = fitz.open()
    p1 = doc.new_page(width=A4.width, height=A4.height)
    y = _heading(p1, 72, "Halvorsen Marine Systems - Annual Report 2025", 16) + 14
    y = _heading(p1, y, "Letter from the Chief Executive", 12) + 8
    y = _para(
        p1,
        y,
        (
            "Dear shareholders, 2025 was the year our investment in software began to pay back. Group revenue rose to "
            "$318.4 million from $287.9 million in 2024, an increase of 10.6%, and operating profit reached $41.2 million "
            "(2024: $33.5 million). The order backlog at year end stood at $402.6 million, the highest in the company's "
            "history, with harbour authorities in Rotterdam and Gdansk among the new customers."
        ),
    )
    y = _para(
        p1,
        y,
        (
            "In March the board appointed Ingrid Solberg as Chief Financial Officer, succeeding Tomas Berge, who retired "
            "after eleven years with the company. Ingrid joined us from a listed shipping group where she led treasury "
            "and investor relations. The board proposes a dividend of $0.84 per share, up from $0.70 a year earlier."
        ),
    )
    y = _para(
        p1,
        y,
        (
            "Our priorities for 2026 are to complete the integration of the Fleet Software platform with our sensor "
            "range, to lift the margin of Service Contracts, which fell during the year, and to keep lead times below "
            "eight weeks for every product line. I thank our employees for a demanding and successful year."
        ),
    )
    _para(p1, y, "Marta Lindqvist, Chief Executive Officer, Bergen, 12 February 2026")

    p2 = doc.new_page(width=A4.width, height=A4.height)
    y = _heading(p2, 72, "Segment results", 14) + 10
    y = _para(p2, y, "Revenue and operating profit by business segment, in millions of US dollars.", 10)
    rows = [("Segment", "Revenue 2025", "Revenue 2024", "Op. profit 2025", "Op. profit 2024")]
    rows += [(s, f"{a:.1f}", f"{b:.1f}", f"{c:.1f}", f"{d:.1f}") for s, a, b, c, d in SEGMENTS]
    rows.append(("Total", *(f"{sum(r[k] for r in SEGMENTS):.1f}" for k in range(1, 5))))
    y = _ruled_table(p2, y, rows, [56, 186, 278, 370, 463, 556])
    _para(
        p2,
        y,
        (
            "Fleet Software was the fastest-growing segment, as 14 ferry operators moved their route planning to the "
            "platform. Offshore Sensors remained the largest segment by revenue and profit. Service Contracts declined "
            "slightly after two legacy maintenance agreements in the North Sea ended in the second quarter."
        ),
        10.5,
    )

    p3 = doc.new_page(width=A4.width, height=A4.height)
    y = _heading(p3, 72, "People and locations", 14) + 10
    y = _para(p3, y, "Employees by department at year end (full-time equivalents).", 10)
    rows = [("Department", "31 Dec 2025", "31 Dec 2024")] + [(d, str(a), str(b)) for d, a, b in HEADCOUNT]
    rows.append(("Total", f"{sum(a for _, a, _ in HEADCOUNT):,}", f"{sum(b for _, _, b in HEADCOUNT):,}"))
    y = _ruled_table(p3, y, rows, [56, 236, 346, 456])
    _para(
        p3,
        y,
        (
            "The new production facility in Stavanger opened on 18 September 2025 with capacity for 2,400 sensor units "
            "per month. Manufacturing headcount fell as assembly moved there from the older plant in Haugesund, which "
            "will close in 2026. Staff turnover was 7.8% (2024: 9.1%)."
        ),
        10.5,
    )
    _save(doc, path, "Halvorsen Marine Systems - Annual Report 2025")


# -- (b) budget: tables without ruling lines ------------------------------------------------------

DEPARTMENTS = [
    ("Public Works", 14820, 15460),
    ("Parks & Recreation", 6275, 6540),
    ("Library Services", 3912, 3870),
    ("Fire & Rescue", 11348, 12105),
    ("Planning & Permits", 2684, 2790),
]
PROJECTS = [
    ("Riverside Bridge repair", "Apr 2026", "Nov 2026", 4750, "State grant"),
    ("Library roof replacement", "Jun 2026", "Sep 2026", 865, "Reserves"),
    ("North depot fleet", "Jan 2026", "Mar 2026", 1920, "Bonds"),
    ("Maple Street water main", "Aug 2026", "May 2027", 3380, "Water fund"),
]


def budget(path: Path) -> None:
    doc = fitz.open()
    p1 = doc.new_page(width=A4.width, height=A4.height)
    y = _heading(p1, 72, "Town of Eastbrook - Operating and Capital Budget 2026", 15) + 14
    y = _para(
        p1,
        y,
        (
            "This budget sets out the operating expenditure of each town department and the capital projects planned "
            "for 2026. Figures are in thousands of US dollars. The 2025 column shows audited actual spending; the 2026 "
            "column shows the adopted budget."
        ),
        10.5,
    )
    y = _heading(p1, y + 4, "Table 1. Operating expenditure by department ($ thousands)", 11) + 14
    rows = [("Department", "2025 Actual", "2026 Budget", "Change %")]
    rows += [(d, f"{a:,}", f"{b:,}", f"{(b - a) / a * 100:+.1f}") for d, a, b in DEPARTMENTS]
    rows.append(
        (
            "Total",
            f"{sum(a for _, a, _ in DEPARTMENTS):,}",
            f"{sum(b for _, _, b in DEPARTMENTS):,}",
            f"{(sum(b for *_, b in DEPARTMENTS) / sum(a for _, a, _ in DEPARTMENTS) - 1) * 100:+.1f}",
        )
    )
    y = _unruled_table(p1, y, rows, [60, 330, 430, 520])
    _para(
        p1,
        y + 6,
        (
            "Fire & Rescue rises most, reflecting six additional firefighter posts at the Hollow Lane station. Library "
            "Services falls because the mobile library van was retired in 2025 and not replaced."
        ),
        10.5,
    )

    p2 = doc.new_page(width=A4.width, height=A4.height)
    y = _heading(p2, 72, "Table 2. Capital projects 2026", 11) + 14
    rows = [("Project", "Start", "Completion", "Cost ($ thousands)", "Funded by")]
    rows += [(n, s, e, f"{c:,}", f) for n, s, e, c, f in PROJECTS]
    # the last column is left-aligned text, so it is set by hand rather than right-aligned
    y_end = _unruled_table(p2, y, [r[:4] for r in rows], [60, 290, 370, 470])
    for i, r in enumerate(rows):
        p2.insert_text((486, y + i * 16), r[4], fontsize=10, fontname="hebo" if i == 0 else "helv")
    y = _para(
        p2,
        y_end + 6,
        (
            "The Riverside Bridge repair depends on the state grant being confirmed by March 2026; if it is not, the work "
            "moves to 2027. The water main replacement on Maple Street will close the street to through traffic for "
            "about ten weeks."
        ),
        10.5,
    )
    _para(
        p2,
        y,
        (
            "This budget was prepared by the Finance Director, Priya Raman, and adopted by the town council on "
            "9 December 2025 by a vote of 6 to 1. The property tax rate rises from 11.42 to 11.87 per thousand dollars "
            "of assessed value."
        ),
        10.5,
    )
    _save(doc, path, "Town of Eastbrook - Budget 2026")


# -- (c) two-column paper ---------------------------------------------------------------------------

PAPER_COLUMNS: list[list[list[str]]] = [  # pages -> columns -> paragraphs
    [
        [
            "1 Introduction",
            (
                "Automatic speech recognition works well for the few languages with thousands of hours of transcribed "
                "audio, and poorly for the rest. Most of the world's languages have little more than a Bible reading, a "
                "radio archive without transcripts, and a handful of volunteers willing to record and correct speech."
            ),
            (
                "Dense transformer encoders spend the same computation on every frame, whether it carries speech, silence "
                "or noise. In low-resource settings this is doubly wasteful: the model is too large for the data, and the "
                "data is too noisy for the model. We ask whether routing each frame to a small subset of attention heads "
                "can make training on little data both cheaper and more accurate."
            ),
        ],
        [
            (
                "Our contributions are threefold. First, we describe a routing layer that selects attention heads per "
                "frame with a learned gate and a load-balancing loss. Second, we release a corpus collected with "
                "community partners, with consent records for every speaker. Third, we show that sparse routing lowers "
                "word error rate on every language in the corpus, with the largest gains where data is scarcest."
            ),
            (
                "The rest of the paper describes the corpus and training setup (Section 2), the results (Section 3) and "
                "the limitations of this study (Section 4)."
            ),
        ],
    ],
    [
        [
            "2 Data and training",
            (
                "We collected 1,846 hours of transcribed speech in 23 languages from 312 volunteer speakers, recorded on "
                "mobile phones in quiet rooms and in the open. Each utterance was transcribed once and checked by a "
                "second speaker of the language; utterances on which the two disagreed were discarded, about 6% of the "
                "total. We hold out 40 speakers for testing, so no test speaker appears in training."
            ),
            (
                "The encoder has 94 million parameters in 16 layers, with 8 of 32 heads active per frame. We trained it "
                "for 180,000 steps with a batch size of 256 utterances on 16 A100 GPUs, which took 5.5 days. The learning "
                "rate warmed up over the first 8,000 steps to a peak of 0.0006 and then followed a cosine schedule."
            ),
        ],
        [
            (
                "The dense baseline has the same width and depth and is trained with the same data, schedule and "
                "tokenizer, so the only difference between the two systems is the routing layer. We decode both with "
                "a beam of 8 and no external language model."
            ),
            "3 Results",
            (
                "On the held-out speakers, word error rate fell from 21.7% for the dense baseline to 18.3% with sparse "
                "routing, averaged over all 23 languages. Training throughput rose by 37% because inactive heads are "
                "skipped. The gains were largest for the nine languages with under 40 hours of data each."
            ),
        ],
    ],
    [
        [
            (
                "On the Swahili subset, the largest in the corpus with 212 hours, the sparse model reached a word error "
                "rate of 24.9% against 29.4% for the baseline; on Yoruba it reached 31.2% against 33.0%. Gains were "
                "smallest on tonal languages, where the gate tends to route pitch-bearing frames to the same few heads."
            ),
            "4 Limitations",
            (
                "All recordings were read speech; spontaneous conversation remains untested. Speakers skew young and "
                "urban, since recruitment went through university partners."
            ),
        ],
        [
            "Acknowledgements",
            (
                "This work was funded by the Lindgren Foundation under grant LF-2291. We thank the volunteer speakers and "
                "the community coordinators in Nairobi, Ibadan and Accra, without whom the corpus would not exist."
            ),
            "Correspondence: Amara Nwosu, Department of Linguistics, University of Edinburgh.",
        ],
    ],
]


def paper(path: Path) -> None:
    doc = fitz.open()
    margin, gutter = 54.0, 10.0
    col_w = (A4.width - 2 * margin - gutter) / 2
    for n, columns in enumerate(PAPER_COLUMNS):
        page = doc.new_page(width=A4.width, height=A4.height)
        top = 60.0
        if n == 0:
            _box(
                page,
                fitz.Rect(margin, 56, A4.width - margin, 100),
                "Sparse Attention Routing for Low-Resource Speech Recognition",
                16,
                "hebo",
                align=1,
            )
            _box(
                page,
                fitz.Rect(margin, 100, A4.width - margin, 130),
                "Amara Nwosu, Kofi Mensah and Elin Strand",
                11,
                align=1,
            )
            top = (
                _box(
                    page,
                    fitz.Rect(margin + 40, 136, A4.width - margin - 40, 300),
                    (
                        "Abstract. We route each audio frame to a few attention heads chosen by a learned gate, and train "
                        "speech recognisers for languages with little transcribed audio. Sparse routing trains faster than "
                        "a dense encoder of the same size and makes fewer errors on held-out speakers."
                    ),
                    10,
                )
                + 16
            )
        page.insert_text((A4.width / 2 - 4, A4.height - 30), str(n + 1), fontsize=9, fontname="helv")
        for c, paragraphs in enumerate(columns):
            x0 = margin + c * (col_w + gutter)
            y = top
            for para in paragraphs:
                heading = len(para) < 40
                y = (
                    _box(
                        page,
                        fitz.Rect(x0, y, x0 + col_w, A4.height - 50),
                        para,
                        10.5 if heading else 10,
                        "hebo" if heading else "tiro",
                    )
                    + 8
                )
    _save(doc, path, "Sparse Attention Routing for Low-Resource Speech Recognition")


# -- (d) chart page ---------------------------------------------------------------------------------

WIND = [("Northern Ridge", 468, 431), ("Coastal Plain", 592, 610), ("River Valley", 275, 248), ("Highlands", 383, 359)]


def chart(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=100)
    xs = range(len(WIND))
    ax.bar([i - 0.2 for i in xs], [b for _, _, b in WIND], width=0.4, label="2024", color="#9aa9c4")
    bars = ax.bar([i + 0.2 for i in xs], [a for _, a, _ in WIND], width=0.4, label="2025", color="#2f5597")
    ax.bar_label(bars, fontsize=8)
    ax.set_xticks(list(xs), [r for r, _, _ in WIND])
    ax.set_ylabel("Wind generation (GWh)")
    ax.set_title("Wind generation by region")
    ax.legend()
    fig.tight_layout()
    png = _png(fig)

    doc = fitz.open()
    p1 = doc.new_page(width=A4.width, height=A4.height)
    y = _heading(p1, 72, "Coastal Grid Cooperative - Wind generation 2025", 15) + 14
    y = _para(
        p1,
        y,
        (
            "The cooperative's 61 member communities own wind farms in four regions. The chart below compares each "
            "region's generation in 2025 with 2024."
        ),
        10.5,
    )
    p1.insert_image(fitz.Rect(66, y, 546, y + 255), stream=png)
    y += 270
    _para(
        p1,
        y,
        (
            "In 2025 Northern Ridge generated 468 GWh, Coastal Plain 592 GWh, River Valley 275 GWh and Highlands "
            "383 GWh. In 2024 the same regions generated 431, 610, 248 and 359 GWh. Coastal Plain produced less than "
            "the year before because two of its turbines were out of service for gearbox replacement from May to "
            "August."
        ),
        10.5,
    )
    p2 = doc.new_page(width=A4.width, height=A4.height)
    y = _heading(p2, 72, "Capacity additions", 14) + 12
    _para(
        p2,
        y,
        (
            "Two 7.2 MW turbines at Kestrel Point in the River Valley region were commissioned on 2 June 2025, "
            "bringing the cooperative's installed capacity to 318 MW. A further 21.6 MW at Gull Head is planned for "
            "2027, subject to the outcome of the grid connection study."
        ),
        10.5,
    )
    _save(doc, path, "Coastal Grid Cooperative - Wind generation 2025")


# -- (e) scanned memo: an image with no text layer ---------------------------------------------------

SCANNED_TEXT = """NORTHBRIDGE LOGISTICS - INTERNAL MEMO

Date: 27 January 2026
To: All warehouse staff
From: Daniel Okafor, Head of Operations
Subject: Relocation of the Dunmore warehouse

The Dunmore warehouse will close on 14 August 2026. Stock and equipment will move to the Kettering site over six weekends starting 13 June 2026.

23 of the 31 Dunmore staff have accepted transfers to Kettering; the others will receive severance under the 2024 agreement.

The new lease at Kettering costs GBP 186,000 per year, compared with GBP 241,000 at Dunmore. The forklift fleet (9 trucks) moves with the stock.

Questions to Aisha Bello in HR, extension 4417."""


def scanned(path: Path) -> None:
    clean = fitz.open()
    page = clean.new_page(width=A4.width, height=A4.height)
    _box(page, fitz.Rect(72, 72, A4.width - 72, A4.height - 72), SCANNED_TEXT, 11.5, "cour")
    pix = page.get_pixmap(dpi=150, colorspace=fitz.csGRAY)
    img = Image.frombytes("L", (pix.width, pix.height), pix.samples)
    img = img.rotate(0.9, resample=Image.BICUBIC, expand=False, fillcolor=255)
    rng = random.Random(SEED)
    px = img.load()
    for _ in range(img.width * img.height // 60):  # speckle, as a flatbed scan of a photocopy has
        x, y = rng.randrange(img.width), rng.randrange(img.height)
        px[x, y] = rng.choice((0, 90, 160))
    img = img.filter(ImageFilter.GaussianBlur(0.6)).point(lambda v: min(v, 235))  # grey paper, soft edges
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    doc = fitz.open()
    doc.new_page(width=A4.width, height=A4.height).insert_image(A4, stream=buf.getvalue())
    _save(doc, path, "Scan 2026-01-27")


# -- (f) repository ------------------------------------------------------------------------------------

TIDEWATCH = {
    "README.md": """# tidewatch

Polls tide gauges and raises an alert when the water level at a station passes a threshold.
Readings are stored in SQLite and can be exported or served over HTTP.

## Usage

    pip install -e .
    tidewatch poll --station NOAA-8443970
    tidewatch serve
    tidewatch export --format json > readings.json

Settings come from `tidewatch.toml`, then `TIDEWATCH_*` environment variables, then the defaults in
`tidewatch/config.py`.

## Changes

- 0.5.2: `export` writes JSON Lines when `--format jsonl` is given.
- 0.5.0: the default poll interval was raised from 60 to 90 seconds, to stay inside the gauge API's rate limit.
- 0.4.0: alerts are repeated at most once per cooldown period.
""",
    "pyproject.toml": """[project]
name = "tidewatch"
version = "0.5.2"
requires-python = ">=3.10"
dependencies = ["httpx>=0.27"]

[project.scripts]
tidewatch = "tidewatch.cli:main"
""",
    "tidewatch/__init__.py": '''"""Tide gauge polling and alerts."""

__version__ = "0.5.2"
''',
    "tidewatch/config.py": '''"""Settings, with the defaults used when neither tidewatch.toml nor the environment sets them."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

DEFAULT_STATIONS = ("NOAA-8443970", "NOAA-8447930")


@dataclass
class Settings:
    poll_interval_s: int = 90
    request_timeout_s: float = 12.5
    max_retries: int = 4
    alert_threshold_m: float = 2.35
    history_days: int = 14
    port: int = 8427
    stations: tuple[str, ...] = DEFAULT_STATIONS
    database_url: str = "sqlite:///tidewatch.db"


def from_env(base: Settings | None = None) -> Settings:
    """``base`` (default: the defaults) with any TIDEWATCH_<FIELD> environment variable applied."""
    settings = base or Settings()
    for f in fields(Settings):
        raw = os.environ.get(f"TIDEWATCH_{f.name.upper()}")
        if raw is None:
            continue
        if f.type == "tuple[str, ...]":
            setattr(settings, f.name, tuple(s.strip() for s in raw.split(",") if s.strip()))
        else:
            setattr(settings, f.name, type(getattr(settings, f.name))(raw))
    return settings
''',
    "tidewatch/alerts.py": '''"""Alerting: a level over the threshold raises an alert, repeated at most once per cooldown."""

from __future__ import annotations

import time

COOLDOWN_MINUTES = 30
_last_alert: dict[str, float] = {}


def should_alert(station: str, level_m: float, threshold_m: float, now: float | None = None) -> bool:
    """True when ``level_m`` exceeds ``threshold_m`` and the station has not alerted within the cooldown."""
    now = time.time() if now is None else now
    if level_m <= threshold_m:
        return False
    last = _last_alert.get(station)
    if last is not None and now - last < COOLDOWN_MINUTES * 60:
        return False
    _last_alert[station] = now
    return True
''',
    "tidewatch/cli.py": '''"""The tidewatch command: poll, serve, export."""

from __future__ import annotations

import argparse
import sys

from tidewatch.config import from_env


def build_parser() -> argparse.ArgumentParser:
    settings = from_env()
    parser = argparse.ArgumentParser(prog="tidewatch")
    sub = parser.add_subparsers(dest="command", required=True)

    poll = sub.add_parser("poll", help="poll stations and raise alerts")
    poll.add_argument("--station", action="append", help="station id (repeatable; default: all configured)")
    poll.add_argument("--interval", type=int, default=settings.poll_interval_s, help="seconds between polls")
    poll.add_argument("--once", action="store_true", help="poll once and exit")

    serve = sub.add_parser("serve", help="serve readings over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=settings.port)

    export = sub.add_parser("export", help="write stored readings to stdout")
    export.add_argument("--format", choices=("csv", "json", "jsonl"), default="csv")
    export.add_argument("--limit", type=int, default=500, help="most recent readings to write")
    export.add_argument("--days", type=int, default=settings.history_days, help="only readings from the last N days")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"tidewatch {args.command}: not connected to a gauge API in this build", file=sys.stderr)
    return 1
''',
}


def repo(root: Path) -> None:
    for rel, text in TIDEWATCH.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


# -- (g) CSV and markdown --------------------------------------------------------------------------------

INVENTORY = [  # part_no, description, warehouse, qty_on_hand, unit_cost_usd, reorder_level
    ("HX-220", "Pressure valve 1/2in", "Dunmore", 140, 18.40, 60),
    ("HX-220", "Pressure valve 1/2in", "Kettering", 312, 18.40, 60),
    ("HX-240", "Pressure valve 3/4in", "Kettering", 85, 23.15, 40),
    ("HX-240", "Pressure valve 3/4in", "Dunmore", 47, 23.15, 40),
    ("BR-1045", "Flange bracket, steel", "Kettering", 1260, 3.72, 500),
    ("BR-1045", "Flange bracket, steel", "Dunmore", 980, 3.72, 500),
    ("BR-1050", "Flange bracket, stainless", "Kettering", 410, 6.95, 200),
    ("GS-88", "Gasket set, nitrile", "Dunmore", 2300, 1.18, 1000),
    ("GS-88", "Gasket set, nitrile", "Kettering", 1750, 1.18, 1000),
    ("GS-90", "Gasket set, viton", "Kettering", 620, 4.60, 300),
    ("PM-7", "Pump motor 0.75kW", "Kettering", 12, 412.00, 5),
    ("PM-7", "Pump motor 0.75kW", "Dunmore", 9, 412.00, 5),
    ("PM-9", "Pump motor 1.5kW", "Kettering", 6, 538.50, 4),
    ("SN-301", "Level sensor, ultrasonic", "Dunmore", 33, 96.25, 20),
    ("SN-301", "Level sensor, ultrasonic", "Kettering", 58, 96.25, 20),
    ("SN-305", "Level sensor, radar", "Kettering", 21, 241.00, 10),
    ("CB-12", "Control board rev C", "Kettering", 74, 67.80, 30),
    ("CB-12", "Control board rev C", "Dunmore", 26, 67.80, 30),
    ("HS-5", "Hose, reinforced 5m", "Dunmore", 190, 14.95, 80),
    ("HS-5", "Hose, reinforced 5m", "Kettering", 265, 14.95, 80),
]

COUNCIL_NOTES = """# Product council - 11 February 2026

Present: Lena Virtanen (chair), Daniel Okafor, Priya Shah, Marcus Webb, Yuki Tanaka

## Decisions

1. Tidewatch Cloud launch moves from 14 April to 19 May 2026, so that the alert cooldown rework ships first.
2. Pricing for Tidewatch Cloud: 29 USD per station per month, 24 USD per station on annual plans.
3. The pilot with the Port of Harwich is extended to 30 June 2026 at no charge.

## Actions

| Owner | Action | Due |
|---|---|---|
| Priya Shah | Pricing page and billing plans | 20 March 2026 |
| Marcus Webb | Load test at 5,000 stations | 3 April 2026 |
| Yuki Tanaka | Harwich pilot report | 15 July 2026 |
| Lena Virtanen | Launch announcement | 12 May 2026 |

## Notes

Daniel reported that the Dunmore move will not affect spare-part supply for the Harwich gauges.
Next council: 11 March 2026.
"""


def tables(folder: Path) -> None:
    lines = ["part_no,description,warehouse,qty_on_hand,unit_cost_usd,reorder_level"]
    lines += [f'{p},"{d}",{w},{q},{c:.2f},{r}' for p, d, w, q, c, r in INVENTORY]
    (folder / "parts_inventory.csv").write_text("\n".join(lines) + "\n")
    (folder / "product_council_notes.md").write_text(COUNCIL_NOTES)


# -- the corpus ------------------------------------------------------------------------------------------

DOCUMENTS = (
    "annual_report_2025.pdf",
    "eastbrook_budget_2026.pdf",
    "speech_routing_paper.pdf",
    "wind_generation_2025.pdf",
    "dunmore_memo_scan.pdf",
    "tidewatch",
    "parts_inventory.csv",
    "product_council_notes.md",
)

# Each question is asked over its own document plus this one, chosen to look alike (figures by
# year, the same warehouse, the same product name) so retrieval must pick the right passage.
DISTRACTOR = {
    "annual_report_2025.pdf": "eastbrook_budget_2026.pdf",
    "eastbrook_budget_2026.pdf": "annual_report_2025.pdf",
    "speech_routing_paper.pdf": "wind_generation_2025.pdf",
    "wind_generation_2025.pdf": "annual_report_2025.pdf",
    "dunmore_memo_scan.pdf": "parts_inventory.csv",
    "tidewatch": "product_council_notes.md",
    "parts_inventory.csv": "dunmore_memo_scan.pdf",
    "product_council_notes.md": "tidewatch",
}


def write_corpus(folder: str | Path) -> dict[str, Path]:
    """Write every document into ``folder`` (created if missing); returns name -> path."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    annual_report(out / "annual_report_2025.pdf")
    budget(out / "eastbrook_budget_2026.pdf")
    paper(out / "speech_routing_paper.pdf")
    chart(out / "wind_generation_2025.pdf")
    scanned(out / "dunmore_memo_scan.pdf")
    repo(out / "tidewatch")
    tables(out)
    return {name: out / name for name in DOCUMENTS}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 benchmarks/qa_corpus.py OUT_DIR")
    for path in write_corpus(sys.argv[1]).values():
        print(path)
