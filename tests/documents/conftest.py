"""Fixtures of the document tests: a generated report PDF and the K2.6-format test tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from documents_corpus import report


@pytest.fixture(scope="session")
def report_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """p.1 two columns, p.2 a ruled table and a link, p.3 a chart, p.4 a scanned page; an outline."""
    return report(tmp_path_factory.mktemp("pdf") / "report.pdf")


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """The K2.6-format test tokenizer (real pattern and special block, small learned vocabulary)."""
    from kimidoc.chat.tokenizer import load_tokenizer
    from kimidoc.testing.tokenizer import write_tokenizer

    return load_tokenizer(write_tokenizer(tmp_path_factory.mktemp("tok")))
