"""`hotline flows check|test|graph` on the shipped flows and on broken copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from backend.core.settings import SHIPPED_FLOWS_DIR
from backend.flows.diagram import mermaid
from backend.flows.dialogs import run_directory
from backend.flows.registry import load_bundle
from bot.cli import main


def test_check_passes_the_shipped_flows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flows", "check", str(SHIPPED_FLOWS_DIR)]) == 0
    out = capsys.readouterr().out
    assert "flows OK" in out
    assert " F0" not in out


def test_check_fails_with_code_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(SHIPPED_FLOWS_DIR, tmp_path, dirs_exist_ok=True)
    flow = tmp_path / "sextortion.flow.yaml"
    flow.write_text(flow.read_text().replace("next: preserve", "next: presrve"))
    assert main(["flows", "check", str(flow)]) == 1
    out = capsys.readouterr().out
    assert f"{flow}:" in out and " F001 " in out


def test_every_shipped_flow_is_covered_by_its_dialog_tests() -> None:
    bundle, _ = load_bundle(SHIPPED_FLOWS_DIR)
    assert bundle is not None
    report, coverage = run_directory(bundle, SHIPPED_FLOWS_DIR)
    assert report.failures == []
    assert report.passed >= 25
    for name in bundle.flows:
        assert coverage.transitions(name) >= 90.0, (name, coverage.missing(name))


def test_test_prints_coverage_and_fails_a_wrong_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["flows", "test", str(SHIPPED_FLOWS_DIR)]) == 0
    assert "report" in capsys.readouterr().out
    shutil.copytree(SHIPPED_FLOWS_DIR, tmp_path, dirs_exist_ok=True)
    table = tmp_path / "tests" / "report.test.yaml"
    table.write_text(table.read_text().replace("bot: [report.declined]", "bot: [report.category]"))
    assert main(["flows", "test", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "declining consent" in out


def test_test_fails_a_flow_under_the_coverage_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(SHIPPED_FLOWS_DIR, tmp_path, dirs_exist_ok=True)
    (tmp_path / "tests" / "safety.test.yaml").unlink()
    assert main(["flows", "test", str(tmp_path)]) == 1
    assert "not taken:" in capsys.readouterr().out


def test_graph_prints_mermaid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flows", "graph", "sextortion"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stateDiagram-v2\n")
    assert "preserve --> handoff : counselor_now" in out
    assert main(["flows", "graph", "nowhere"]) == 1


def test_the_diagrams_in_docs_are_not_stale() -> None:
    """Regenerate with `hotline flows graph NAME > docs/flows/NAME.mmd` after a flow edit."""
    bundle, _ = load_bundle(SHIPPED_FLOWS_DIR)
    assert bundle is not None
    docs = Path(__file__).parent.parent / "docs" / "flows"
    assert {p.stem for p in docs.glob("*.mmd")} == set(bundle.flows)
    for name, flow in bundle.flows.items():
        assert (docs / f"{name}.mmd").read_text() == mermaid(flow.spec), f"{name}.mmd is stale"
