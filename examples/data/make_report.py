"""Regenerate report.pdf, the small annual report the README's first command asks about.

Run: python examples/data/make_report.py  (needs pymupdf and matplotlib)
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import pymupdf as fitz

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
QUARTERS = [("Q1", 9.1, 7.9), ("Q2", 10.2, 8.8), ("Q3", 11.0, 9.4), ("Q4", 12.4, 10.1)]


def text_block(page: fitz.Page, y: float, title: str, body: str) -> float:
    page.insert_text((56, y), title, fontsize=15, fontname="helv")
    rect = fitz.Rect(56, y + 12, 540, y + 400)
    used = page.insert_textbox(rect, body, fontsize=11, fontname="helv")
    return y + 12 + (400 - used) + 24  # insert_textbox returns the unused height


def table(page: fitz.Page, top: float) -> None:
    rows = [("Quarter", "Revenue 2025 ($M)", "Revenue 2024 ($M)")] + [
        (q, f"{a:.1f}", f"{b:.1f}") for q, a, b in QUARTERS
    ]
    rows.append(("Total", f"{sum(a for _, a, _ in QUARTERS):.1f}", f"{sum(b for _, _, b in QUARTERS):.1f}"))
    xs, h = [56, 176, 356, 540], 22
    for i, row in enumerate(rows):
        y = top + i * h
        for j, cell in enumerate(row):
            page.draw_rect(fitz.Rect(xs[j], y, xs[j + 1], y + h), color=(0, 0, 0), width=0.8)
            page.insert_text((xs[j] + 6, y + 15), cell, fontsize=10.5, fontname="helv")


def chart_png() -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    qs = [q for q, _, _ in QUARTERS]
    ax.bar([i - 0.2 for i in range(4)], [b for _, _, b in QUARTERS], width=0.4, label="2024")
    ax.bar([i + 0.2 for i in range(4)], [a for _, a, _ in QUARTERS], width=0.4, label="2025")
    ax.set_xticks(range(4), qs)
    ax.set_ylabel("Revenue ($M)")
    ax.set_title("Quarterly revenue")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def main() -> None:
    doc = fitz.open()
    p1 = doc.new_page()
    y = text_block(
        p1,
        72,
        "Northwind Analytics - Annual Report 2025",
        "Northwind Analytics builds forecasting software for regional grocery chains.",
    )
    y = text_block(
        p1,
        y,
        "Summary",
        "Revenue grew 18% in 2025, to $42.7 million from $36.2 million in 2024. "
        "Growth came mostly from new customers in the Nordic region, which added 41 stores. "
        "Operating margin improved from 9.5% to 12.1%, and headcount rose from 212 to 248.",
    )
    text_block(
        p1,
        y,
        "Outlook",
        "For 2026 the company expects revenue between $48 million and $51 million. "
        "The main risk is the renewal of the contract with FreshWay, which provided 14% of 2025 revenue.",
    )
    p2 = doc.new_page()
    y = text_block(p2, 72, "Quarterly revenue", "Revenue by quarter, in millions of US dollars.")
    table(p2, y)
    p3 = doc.new_page()
    y = text_block(p3, 72, "Revenue chart", "The chart compares each quarter of 2025 with the same quarter of 2024.")
    p3.insert_image(fitz.Rect(56, y, 540, y + 260), stream=chart_png())
    doc.set_toc([[1, "Summary", 1], [1, "Quarterly revenue", 2], [1, "Revenue chart", 3]])
    doc.set_metadata({"title": "Northwind Analytics - Annual Report 2025", "author": "Northwind Analytics"})
    doc.save(HERE / "report.pdf", garbage=4, deflate=True)


if __name__ == "__main__":
    main()
