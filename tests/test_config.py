"""Pipeline configs: strict models, one-line errors naming file and field, registry and files."""
from __future__ import annotations

import pytest
import yaml

from beam_pipelines.config.loader import discover_pipelines, load_pipeline, resolve_pipeline_ref
from beam_pipelines.config.schema import load_schema
from beam_pipelines.errors import ConfigError, NotFoundError
from beam_pipelines.registry import REGISTRY
from tests.conftest import CONFIGS

CONFIG = "openai/cost/usage_cost.yml"


def _edit(configs, mutate, name=CONFIG):
    path = configs / name
    data = yaml.safe_load(path.read_text())
    mutate(data)
    path.write_text(yaml.safe_dump(data))


def test_repo_configs_are_valid_and_use_registered_types():
    pipelines = discover_pipelines(CONFIGS)
    assert "openai/cost/usage_cost" in pipelines
    config = pipelines["openai/cost/usage_cost"].config
    assert [s.step_id for s in config.steps][:2] == ["extract_usage", "transform_cost"]
    assert [s.ps_type for s in config.steps][:2] == ["openai.usage", "openai.cost"]
    assert all(s.ps_type in REGISTRY for p in pipelines.values() for s in p.config.steps)
    assert config.schedule == "0 4 * * *"


def test_unknown_top_level_key_is_one_line_naming_file_and_field(configs_copy):
    _edit(configs_copy, lambda d: d.update(retries=3))
    with pytest.raises(ConfigError) as exc:
        discover_pipelines(configs_copy)
    assert str(exc.value) == f"{CONFIG}: retries: unknown key"


def test_unknown_option_key_names_the_step(configs_copy):
    _edit(configs_copy, lambda d: d["steps"][0]["options"].update(pagesize=10))
    with pytest.raises(ConfigError, match=r"usage_cost.yml: steps\[0\]\.options\.pagesize: unknown key"):
        discover_pipelines(configs_copy)


def test_bad_ps_type_is_rejected(configs_copy):
    _edit(configs_copy, lambda d: d["steps"][1].update(ps_type="openai.costs"))
    with pytest.raises(ConfigError, match=r"steps\[1\]\.ps_type: unknown ps_type 'openai.costs'"):
        discover_pipelines(configs_copy)


def test_ps_type_must_be_dot_notation_and_step_id_snake_case(configs_copy):
    _edit(configs_copy, lambda d: d["steps"][0].update(step_id="Extract-Usage"))
    with pytest.raises(ConfigError, match=r"steps\[0\]\.step_id: String should match pattern"):
        discover_pipelines(configs_copy)


def test_invalid_cron_is_rejected(configs_copy):
    _edit(configs_copy, lambda d: d.update(schedule="every day at 4"))
    with pytest.raises(ConfigError, match="schedule: Value error, not a valid cron expression"):
        discover_pipelines(configs_copy)


def test_input_must_name_an_earlier_step(configs_copy):
    _edit(configs_copy, lambda d: d["steps"][1].update(input="nope"))
    with pytest.raises(ConfigError, match="'nope' is not an earlier step_id"):
        discover_pipelines(configs_copy)


def test_missing_schema_file_and_escape_from_configs_folder(configs_copy):
    _edit(configs_copy, lambda d: d["steps"][3]["options"].update(schema_file="openai/cost/schemas/nope.json"))
    with pytest.raises(ConfigError, match=r"steps\[3\]\.options\.schema_file: file .* not found"):
        discover_pipelines(configs_copy)
    _edit(configs_copy, lambda d: d["steps"][3]["options"].update(schema_file="../../etc/passwd"))
    with pytest.raises(ConfigError, match="points outside the configs folder"):
        discover_pipelines(configs_copy)


def test_cluster_column_must_exist_in_schema(configs_copy):
    _edit(configs_copy, lambda d: d["steps"][4]["options"].update(cluster_by=["modle"]))
    with pytest.raises(ConfigError, match="column 'modle' is not in"):
        discover_pipelines(configs_copy)


def test_invalid_yaml_reports_line(configs_copy):
    (configs_copy / CONFIG).write_text("name: x\nsteps: [\n")
    with pytest.raises(ConfigError, match=r"usage_cost.yml: line \d+: invalid YAML"):
        discover_pipelines(configs_copy)


def test_provider_must_match_path(configs_copy):
    _edit(configs_copy, lambda d: d.update(provider="anthropic"))
    with pytest.raises(ConfigError, match="does not match the path"):
        discover_pipelines(configs_copy)


def test_bad_schema_file_is_reported_with_field(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('[{"name": "a", "type": "STRINGY"}]')
    with pytest.raises(ConfigError, match=r"s.json: fields\[0\]\.type: unknown BigQuery type 'STRINGY'"):
        load_schema(path, "s.json")
    path.write_text('[{"name": "a", "type": "STRING", "mode": "OPTIONAL"}]')
    with pytest.raises(ConfigError, match=r"fields\[0\]\.mode"):
        load_schema(path, "s.json")


def test_pipeline_refs_resolve_without_touching_the_filesystem():
    known = {"openai/cost/usage_cost", "openai/subscriptions/subscriptions", "gcp/cost/billing"}
    assert resolve_pipeline_ref("openai/cost/usage_cost", known) == "openai/cost/usage_cost"
    assert resolve_pipeline_ref("openai/usage_cost", known) == "openai/cost/usage_cost"
    for bad in ("../etc/passwd", "openai/../../x", "openai/cost/Usage", "openai", "a/b/c/d", "openai/cost%2f"):
        with pytest.raises(NotFoundError):
            resolve_pipeline_ref(bad, known)
    with pytest.raises(NotFoundError, match="no such pipeline"):
        load_pipeline(CONFIGS, "openai/cost/nope")
