"""The plugin manager (plugins.py): built-ins through the hooks, entry points, ordering, broken plugins."""
import json
import logging
import sys
import textwrap

import click
import numpy as np
import pytest
from matchms import Spectrum

from matchms_diffms import plugins
from matchms_diffms.chem.adducts import parse_adduct
from matchms_diffms.chem.formula import Formula
from matchms_diffms.formula_sources import FormulaCandidate
from matchms_diffms.hookspecs import hookimpl

CAFFEINE_MH = 195.087652


@pytest.fixture
def fresh_pm(monkeypatch):
    """A plugin manager built from scratch for the test, and forgotten afterwards."""
    monkeypatch.delenv(plugins.LOAD_PLUGINS_ENV, raising=False)
    plugins.reset_plugin_manager()
    yield
    plugins.reset_plugin_manager()


def spec(**metadata):
    return Spectrum(mz=np.array([100.0]), intensities=np.array([1.0]), metadata=metadata,
                    metadata_harmonization=False)


def make_distribution(root, dist, version, entry_points: dict, modules: dict):
    """An installed-looking distribution under ``root`` (dist-info folder + modules)."""
    info = root / f"{dist}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = ["[matchms_diffms]"] + [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, code in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(code))


GOOD_PLUGIN = '''
    from matchms_diffms.hookspecs import hookimpl

    def write_csv(spectra, path):
        raise NotImplementedError

    @hookimpl
    def diffms_output_writers():
        return {".FakeCSV": write_csv, ".tsv": write_csv}

    @hookimpl
    def diffms_weight_sources():
        return {"plugin-weights": "/nonexistent/plugin-weights"}

    @hookimpl
    def diffms_register_commands(cli):
        import click

        @cli.command("hello-plugin")
        def hello():
            """Say hello."""
            click.echo("hello from a plugin")
'''

BROKEN_IMPORT = '''
    raise ImportError("this plugin needs libfoo, which is not installed")
'''

BAD_SIGNATURE = '''
    from matchms_diffms.hookspecs import hookimpl

    @hookimpl
    def diffms_formula_candidates(spectrum, contxt):
        return []
'''


@pytest.fixture
def third_party(tmp_path, monkeypatch, fresh_pm):
    tag = tmp_path.name.replace("-", "_").replace(".", "_")
    names = {"good": f"good_{tag}", "broken": f"broken_{tag}", "bad": f"bad_{tag}"}
    make_distribution(tmp_path, f"diffms_fake_{tag}", "1.2.3",
                      {"goodplug": names["good"], "brokenplug": names["broken"], "badsig": names["bad"]},
                      {names["good"]: GOOD_PLUGIN, names["broken"]: BROKEN_IMPORT, names["bad"]: BAD_SIGNATURE})
    monkeypatch.syspath_prepend(str(tmp_path))
    yield names
    for name in names.values():
        sys.modules.pop(name, None)


# ------------------------------------------------------------------------------------------ built-ins
def test_manager_is_a_lazy_singleton(fresh_pm):
    pm = plugins.get_plugin_manager()
    assert pm is plugins.get_plugin_manager()
    assert pm.project_name == "matchms_diffms"
    plugins.reset_plugin_manager()
    assert plugins.get_plugin_manager() is not pm


def test_builtins_are_registered_through_the_hooks(fresh_pm):
    listed = dict(plugins.list_plugins())
    names = list(listed)
    providers = [n for n in names if n.startswith("matchms_diffms.formula_sources.")]
    assert providers == ["matchms_diffms.formula_sources.given", "matchms_diffms.formula_sources.mass_decomposition"]
    assert all(listed[p] == ["diffms_formula_candidates"] for p in providers)
    assert listed["matchms_diffms.writers"] == ["diffms_output_writers"]
    assert {"diffms_weight_sources", "diffms_load_model"} <= set(listed["matchms_diffms.weights"])
    assert set(plugins.output_writers()) >= {".mgf", ".msp", ".json", ".tsv"}


def test_first_result_hooks_use_pluggy_order(fresh_pm):
    hook = plugins.get_plugin_manager().hook
    assert hook.diffms_formula_candidates.spec.opts["firstresult"]
    assert hook.diffms_load_model.spec.opts["firstresult"]
    impls = hook.diffms_formula_candidates.get_hookimpls()         # pluggy calls them last to first
    assert [(i.plugin_name.rsplit(".", 1)[1], i.tryfirst, i.trylast) for i in impls] == [
        ("mass_decomposition", False, True), ("given", True, False)]


@pytest.mark.parametrize("metadata, context, source", [
    ({"formula": "C8H10N4O2", "precursor_formula": "C8H11N4O2", "feature_id": "1"},
     {"sirius_formulas": {"1": [("C8H10N4O2", "[M+H]+", 1.0)]}}, "metadata"),
    ({"precursor_formula": "C8H11N4O2", "feature_id": "1"},
     {"sirius_formulas": {"1": [("C8H10N4O2", "[M+H]+", 1.0)]}}, "precursor_formula"),
    ({"feature_id": "1"}, {"sirius_formulas": {"1": [("C8H10N4O2", "[M+H]+", 1.0)]}}, "sirius"),
    ({}, {}, "mass_decomposition"),
])
def test_order_of_builtin_formula_sources(fresh_pm, metadata, context, source):
    found = plugins.formula_candidates(spec(precursor_mz=CAFFEINE_MH, adduct="[M+H]+", **metadata), context)
    assert found[0].source == source and found[0].formula.hill() == "C8H10N4O2"


class ConstantProvider:
    """A third-party provider proposing a fixed formula."""

    def __init__(self, formula="C2H6O", answer=True):
        self.formula, self.answer, self.calls = formula, answer, 0

    @hookimpl
    def diffms_formula_candidates(self, spectrum, context):
        self.calls += 1
        if not self.answer:
            return None
        return [FormulaCandidate(Formula.parse(self.formula), parse_adduct("[M+H]+"), "buddy", score=0.9)]


def test_plain_third_party_provider_sits_between_user_formulas_and_decomposition(fresh_pm):
    provider = ConstantProvider()
    plugins.get_plugin_manager().register(provider, name="buddy")
    # a user-supplied formula still wins, and the plugin is not even asked
    [c] = plugins.formula_candidates(spec(formula="C8H10N4O2", precursor_mz=CAFFEINE_MH))
    assert c.source == "metadata" and provider.calls == 0
    # SIRIUS results win too
    [c] = plugins.formula_candidates(spec(feature_id="1", precursor_mz=CAFFEINE_MH),
                                     {"sirius_formulas": {"1": [("C8H10N4O2", "[M+H]+", 1.0)]}})
    assert c.source == "sirius"
    # without user formulas the plugin answers before the mass decomposition
    [c] = plugins.formula_candidates(spec(precursor_mz=CAFFEINE_MH))
    assert (c.source, c.formula.hill()) == ("buddy", "C2H6O")


def test_empty_answer_falls_through(fresh_pm):
    provider = ConstantProvider(answer=False)
    plugins.get_plugin_manager().register(provider, name="silent")
    cands = plugins.formula_candidates(spec(precursor_mz=CAFFEINE_MH), {"max_formulas": 2})
    assert provider.calls == 1 and [c.source for c in cands] == ["mass_decomposition"] * 2


def test_tryfirst_provider_overrides_everything(fresh_pm):
    class First(ConstantProvider):
        @hookimpl(tryfirst=True)
        def diffms_formula_candidates(self, spectrum, context):
            return super().diffms_formula_candidates(spectrum, context)

    plugins.get_plugin_manager().register(First("C3H8O"), name="first")
    [c] = plugins.formula_candidates(spec(formula="C8H10N4O2", precursor_mz=CAFFEINE_MH))
    assert c.formula.hill() == "C3H8O"


def test_blocked_builtin_provider(fresh_pm):
    pm = plugins.get_plugin_manager()
    pm.set_blocked("matchms_diffms.formula_sources.mass_decomposition")
    assert plugins.formula_candidates(spec(precursor_mz=CAFFEINE_MH)) == []
    assert "matchms_diffms.formula_sources.mass_decomposition" not in dict(plugins.list_plugins())


# ------------------------------------------------------------------------------------------ entry points
def test_entry_point_plugins_load_and_broken_ones_only_warn(third_party, caplog):
    with caplog.at_level(logging.WARNING, logger="matchms.diffms"):
        listed = dict(plugins.list_plugins())
    assert set(listed["goodplug"]) == {"diffms_output_writers", "diffms_weight_sources", "diffms_register_commands"}
    assert "brokenplug" not in listed and "badsig" not in listed
    messages = [r.getMessage() for r in caplog.records]
    assert any("'brokenplug'" in m and "libfoo" in m for m in messages), messages
    assert any("'badsig'" in m and "contxt" in m for m in messages), messages
    # the built-ins still work
    assert plugins.formula_candidates(spec(formula="C2H6O"))[0].source == "metadata"
    assert plugins.plugin_versions()["goodplug"].endswith("1.2.3")


def test_registry_hooks_merge_and_report_conflicts(third_party, caplog):
    with caplog.at_level(logging.WARNING, logger="matchms.diffms"):
        found = plugins.output_writers()
    good = sys.modules[third_party["good"]]
    assert found[".fakecsv"] is good.write_csv                  # extension lower-cased
    assert found[".mgf"].__module__ == "matchms_diffms.writers"
    assert found[".tsv"] is good.write_csv                      # the later registered plugin is asked first
    assert any("'.tsv'" in r.getMessage() for r in caplog.records)
    assert plugins.weight_sources()["plugin-weights"] == "/nonexistent/plugin-weights"


def test_plugin_commands_are_added(third_party):
    group = click.Group("test")
    plugins.register_commands(group)
    assert "hello-plugin" in group.commands
    from click.testing import CliRunner

    assert CliRunner().invoke(group, ["hello-plugin"]).output == "hello from a plugin\n"


def test_failing_command_registration_only_warns(fresh_pm, caplog):
    class Bad:
        @hookimpl
        def diffms_register_commands(self, cli):
            raise RuntimeError("kaputt")

    class Good:
        @hookimpl
        def diffms_register_commands(self, cli):
            cli.add_command(click.Command("fine", callback=lambda: None))

    pm = plugins.get_plugin_manager()
    pm.register(Good(), name="good-commands")
    pm.register(Bad(), name="bad-commands")
    group = click.Group("test")
    with caplog.at_level(logging.WARNING, logger="matchms.diffms"):
        plugins.register_commands(group)
    assert "fine" in group.commands
    assert any("'bad-commands'" in r.getMessage() and "kaputt" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("value, expected", [("", set()), ("goodplug", {"goodplug"}),
                                             ("goodplug, brokenplug", {"goodplug"})])
def test_load_plugins_env_var(third_party, monkeypatch, value, expected):
    monkeypatch.setenv(plugins.LOAD_PLUGINS_ENV, value)
    plugins.reset_plugin_manager()
    names = {n for n, _ in plugins.list_plugins() if not n.startswith("matchms_diffms.")}
    assert names == expected


def test_missing_optional_builtin_is_skipped(fresh_pm, monkeypatch, caplog):
    monkeypatch.setattr(plugins, "OPTIONAL_BUILTIN_MODULES",
                        plugins.OPTIONAL_BUILTIN_MODULES + ("matchms_diffms.does_not_exist",))
    with caplog.at_level(logging.WARNING, logger="matchms.diffms"):
        names = [n for n, _ in plugins.list_plugins()]
    assert "matchms_diffms.does_not_exist" not in names and "matchms_diffms.writers" in names
    assert not caplog.records                                    # absent module: silent (it is optional)


# ------------------------------------------------------------------------------------------ third-party formats
TOY_PLUGIN = '''
    import json
    from pathlib import Path

    from matchms_diffms import FormulaCandidate, WeightsError, hookimpl
    from matchms_diffms.chem import Formula, parse_adduct

    @hookimpl
    def diffms_load_model(path, config_overrides):
        """A weight format of its own: a JSON file naming a config and a seed for random weights."""
        if Path(path).suffix != ".toyweights":
            return None
        import torch
        from matchms_diffms.model.config import DiffMSConfig
        from matchms_diffms.model.diffms import DiffMS

        try:
            spec = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise WeightsError(f"{path}: broken toy weights: {err}") from None
        torch.manual_seed(spec["seed"])
        model = DiffMS(DiffMSConfig(**{**spec["config"], **config_overrides}))
        return model.eval(), {"name": "toy", "sha256": "7" * 64, "path": str(path), "format": "toy"}

    @hookimpl
    def diffms_formula_candidates(spectrum, context):
        text = spectrum.get("toy_formula")
        if text is None:
            return None
        return [FormulaCandidate(Formula.parse(text), parse_adduct("[M+H]+"), "toy", score=1.0)]
'''


@pytest.fixture
def toy_format(tmp_path, monkeypatch, fresh_pm):
    """A third-party distribution, installed through an entry point, with a weight loader and a provider."""
    from reliability_helpers import TINY_CONFIG

    tag = tmp_path.name.replace("-", "_").replace(".", "_")
    module = f"toy_{tag}"
    make_distribution(tmp_path, f"diffms_toy_{tag}", "0.1", {"toy": module}, {module: TOY_PLUGIN})
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "model.toyweights"
    weights.write_text(json.dumps({"seed": 3, "config": TINY_CONFIG}))
    yield weights
    sys.modules.pop(module, None)


ETHANOL_MH = 47.049141


def test_third_party_loader_and_provider_through_entry_points(toy_format):
    from matchms_diffms import DiffMSAnnotator, load_model, read_annotation

    assert set(dict(plugins.list_plugins())["toy"]) == {"diffms_load_model", "diffms_formula_candidates"}
    model, info = load_model(str(toy_format))
    assert info["format"] == "toy" and model.config.name == "reliability-tiny"
    annotator = DiffMSAnnotator.from_pretrained(str(toy_format), n_samples=4, steps=5, seed=1)
    # no formula in the metadata: the plugin's provider answers before the built-in mass decomposition
    result = read_annotation(annotator.annotate(spec(toy_formula="C2H6O", precursor_mz=ETHANOL_MH)))
    assert (result["formula_source"], result["formula"]) == ("toy", "C2H6O")
    assert result["model"] == "toy@777777777777"
    assert result["status"].split(":")[0] in ("ok", "no_valid_candidates", "no_annotated_peaks")
    # a formula given with the spectrum still wins over the plugin
    result = read_annotation(annotator.annotate(spec(formula="C2H6O", toy_formula="C3H8O",
                                                     precursor_mz=ETHANOL_MH)))
    assert result["formula_source"] == "metadata"


def test_third_party_weights_in_the_annotate_command(toy_format, tmp_path):
    from click.testing import CliRunner

    from matchms_diffms import cli

    mgf = tmp_path / "in.mgf"
    mgf.write_text("BEGIN IONS\nTITLE=a\nPEPMASS=47.049141\nTOY_FORMULA=C2H6O\n29.03858 100\nEND IONS\n")
    out = tmp_path / "out.tsv"
    result = CliRunner().invoke(cli.main, ["annotate", str(mgf), "-o", str(out), "--weights", str(toy_format),
                                           "--samples", "4", "--steps", "5", "--seed", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    header, row = out.read_text().splitlines()[:2]
    cells = dict(zip(header.split("\t"), row.split("\t")))
    assert (cells["formula_source"], cells["model"]) == ("toy", "toy@777777777777")


def test_unknown_weight_file_is_refused_by_every_loader(fresh_pm, tmp_path):
    from matchms_diffms import WeightsError, load_model
    from matchms_diffms.weights import diffms_load_model

    odd = tmp_path / "model.onnx"
    odd.write_bytes(b"\x08\x07onnx-ish")
    assert diffms_load_model(path=odd, config_overrides={}) is None          # the built-in loader passes
    assert diffms_load_model(path=tmp_path, config_overrides={}) is None     # a folder of someone else's
    with pytest.raises(WeightsError, match="no plugin loader understands it"):
        load_model(str(odd))


def test_broken_file_of_a_plugin_format_is_its_error(toy_format):
    from matchms_diffms import WeightsError, load_model

    broken = toy_format.with_name("broken.toyweights")
    broken.write_text("{not json")
    with pytest.raises(WeightsError, match="broken toy weights"):
        load_model(str(broken))
