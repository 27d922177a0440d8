"""The lmms-eval task YAMLs in eval_tasks/: indexed under unique `auroralong_` names, every `!function` resolves,
each task is its lmms-eval 0.7.3 built-in plus the paper's frame setting, and the groups (a group of groups
included) load. Offline and CPU only: no dataset is downloaded (task objects are built without their data), and
nothing here imports the model adapter."""

import importlib.util
import math
import sys
import types
from collections import defaultdict
from pathlib import Path

import lmms_eval.tasks
import pytest
import yaml
from lmms_eval.api.group import ConfigurableGroup
from lmms_eval.api.task import ConfigurableTask, TaskConfig
from lmms_eval.evaluator_utils import consolidate_group_results, get_subtask_list
from lmms_eval.utils import load_yaml_config

EVAL_TASKS = Path(__file__).resolve().parent.parent / "eval_tasks"
PREFIX = "auroralong_"
FRAME_KEYS = ("fps", "num_frames", "max_frames_num")

VDC = ["detailed", "camera", "short", "background", "main_object"]
# lmms-eval 0.7.3's group `mvbench`, in its order
MVBENCH = [
    "action_sequence", "moving_count", "action_prediction", "episodic_reasoning", "action_antonym", "action_count",
    "scene_transition", "object_shuffle", "object_existence", "fine_grained_pose", "unexpected_action",
    "moving_direction", "state_change", "object_interaction", "character_order", "action_localization",
    "counterfactual_inference", "fine_grained_action", "moving_attribute", "egocentric_navigation",
]  # fmt: skip

# our task -> the lmms-eval 0.7.3 built-in it is based on
BUILTIN = {
    "auroralong_activitynetqa": "activitynetqa",
    "auroralong_vatex_test": "vatex_test",
    **{f"auroralong_vdc_{name}": f"{name}_test" for name in VDC},
    "auroralong_mlvu_dev": "mlvu_dev",
    "auroralong_mlvu_test": "mlvu_test",
    **{f"auroralong_mvbench_{name}": f"mvbench_{name}" for name in MVBENCH},
    "auroralong_moviechat_global": "moviechat_global",
    "auroralong_moviechat_breakpoint": "moviechat_breakpoint",
}
# the paper's frames: 1 fps for ActivityNet-QA, VATEX, VDC (MovieChat-1K: our choice), 48 frames for MLVU, MVBench
FPS_1 = {task for task in BUILTIN if not task.startswith(("auroralong_mlvu", "auroralong_mvbench"))}
FRAMES_48 = set(BUILTIN) - FPS_1

GROUPS = {
    "auroralong_vdc": [f"auroralong_vdc_{name}" for name in VDC],
    "auroralong_mvbench": [f"auroralong_mvbench_{name}" for name in MVBENCH],
    "auroralong_moviechat": ["auroralong_moviechat_global", "auroralong_moviechat_breakpoint"],
    "auroralong_paper": [
        "auroralong_vdc", "auroralong_activitynetqa", "auroralong_vatex_test", "auroralong_moviechat",
        "auroralong_mvbench", "auroralong_mlvu_dev",
    ],
}  # fmt: skip
# groups that report a mean over their tasks: group -> metrics
GROUP_AVERAGES = {"auroralong_vdc": {"llmms_eval_acc", "llmms_eval_score"}, "auroralong_mvbench": {"mvbench_accuracy"}}
# generation keys a task may add to its built-in's: VDC and MovieChat-1K set none, we write down 1024 new tokens
ADDED_GENERATION_KEYS = {"max_new_tokens"}
# metrics a task may add to its built-in's: VATEX's BLEU@1, the figure the paper reports
ADDED_METRICS = {"auroralong_vatex_test": {"vatex_Bleu_1"}}


def _fake_sglang() -> types.ModuleType:
    """VDC's utils cannot be imported without the SGLang client (its judge); a stand-in that is never called."""
    module = types.ModuleType("sglang")
    for name in ("RuntimeEndpoint", "assistant", "gen", "set_default_backend", "system", "user"):
        setattr(module, name, lambda *args, **kwargs: None)
    module.function = lambda fn: fn
    return module


@pytest.fixture(scope="module")
def task_manager(tmp_path_factory):
    """A TaskManager over the built-ins and eval_tasks/, with HF_HOME in a tmp dir (the ActivityNet-QA, MovieChat
    and VDC utils read it at import) and, where the SGLang client is missing, a stand-in for it. The lmms-eval task
    modules imported meanwhile are dropped afterwards, so no other test sees this HF_HOME or the stand-in."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
        if importlib.util.find_spec("sglang") is None:
            mp.setitem(sys.modules, "sglang", _fake_sglang())
        before = set(sys.modules)
        yield lmms_eval.tasks.TaskManager("ERROR", include_path=str(EVAL_TASKS))
        for name in [name for name in sys.modules if name not in before and name.startswith("lmms_eval.tasks.")]:
            del sys.modules[name]
            parent, _, child = name.rpartition(".")
            if parent in sys.modules and getattr(sys.modules[parent], child, None) is not None:
                delattr(sys.modules[parent], child)


def _declared() -> dict[str, tuple[str, Path]]:
    """name -> (kind, yaml path) of every YAML in eval_tasks/, read the way lmms-eval indexes them."""
    declared = {}
    for path in sorted(EVAL_TASKS.glob("*.yaml")):
        config = load_yaml_config(str(path), mode="simple")
        kind = "group" if isinstance(config.get("task"), list) else "task"
        name = config["group"] if kind == "group" else config["task"]
        assert name not in declared, f"{name} is declared twice ({declared[name][1].name}, {path.name})"
        declared[name] = (kind, path)
    return declared


def _functions(node, path=()):
    """(key path, yaml node) of every `!function` in a config loaded in "simple" mode (which keeps them as nodes)."""
    if isinstance(node, yaml.Node):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _functions(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _functions(value, (*path, index))


def _at(config, path):
    for key in path:
        config = config[key]
    return config


def _source(fn) -> tuple[str, str]:
    """Where a function is defined: built-in YAMLs import their utils by file, ours by module name."""
    return Path(fn.__code__.co_filename).resolve().as_posix(), fn.__qualname__


def test_every_yaml_is_indexed_under_a_unique_auroralong_name(task_manager):
    declared = _declared()
    assert set(declared) == set(BUILTIN) | set(GROUPS)
    index = task_manager.task_index
    ours = {name for name, entry in index.items() if Path(str(entry["yaml_path"])).parent == EVAL_TASKS}
    builtins = set(index) - ours
    assert builtins, "the built-in tasks were not indexed"
    for name, (kind, path) in declared.items():
        assert name.startswith(PREFIX), name
        assert name not in builtins, f"{name} collides with a built-in (the built-in would win)"
        entry = index[name]
        assert entry["type"] == kind and Path(entry["yaml_path"]) == path, (name, entry)
    for name in BUILTIN.values():
        assert name in builtins, f"lmms-eval has no built-in {name}"


@pytest.mark.parametrize("task", sorted(BUILTIN))
def test_task_is_its_builtin_with_the_papers_frames(task_manager, task):
    path = _declared()[task][1]
    simple = load_yaml_config(str(path), mode="simple")
    config = task_manager._get_config(task)  # mode="full": every !function imported

    functions = list(_functions(simple))
    assert functions, task
    for key_path, node in functions:
        assert node.value.startswith("lmms_eval.tasks."), f"{key_path}: !function {node.value} is not a full path"
        fn = _at(config, key_path)
        assert callable(fn), f"{key_path}: !function {node.value} did not resolve"
        assert f"{fn.__module__}.{fn.__name__}" == node.value

    builtin = task_manager._get_config(BUILTIN[task])
    for key in ("dataset_path", "dataset_name", "dataset_kwargs", "test_split", "output_type",
                "lmms_eval_specific_kwargs", "metadata"):  # fmt: skip
        assert config.get(key) == builtin.get(key), key
    for key in ("doc_to_visual", "doc_to_text", "doc_to_target", "process_results"):
        if callable(builtin[key]):
            assert _source(config[key]) == _source(builtin[key]), key
        else:
            assert config[key] == builtin[key], key
    ours_metrics = {m["metric"]: _source(m["aggregation"]) for m in config["metric_list"]}
    builtin_metrics = {m["metric"]: _source(m["aggregation"]) for m in builtin["metric_list"]}
    assert set(ours_metrics) - set(builtin_metrics) == ADDED_METRICS.get(task, set())
    assert {m: ours_metrics[m] for m in builtin_metrics} == builtin_metrics

    # generation_kwargs as the model receives them (TaskConfig fills in lmms-eval's defaults)
    generation = TaskConfig(**{**config, "task": task}).generation_kwargs
    builtin_generation = TaskConfig(**builtin).generation_kwargs
    rest = {key: value for key, value in generation.items() if key not in FRAME_KEYS}
    assert {key: rest.get(key) for key in builtin_generation} == builtin_generation
    assert set(rest) - set(builtin_generation) <= ADDED_GENERATION_KEYS
    if task in FPS_1:
        assert generation["fps"] == 1.0 and isinstance(generation["fps"], float) and "num_frames" not in generation
    else:
        assert generation["num_frames"] == 48 and isinstance(generation["num_frames"], int) and "fps" not in generation
    assert generation["do_sample"] is False


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_group_lists_its_tasks(task_manager, group):
    config = task_manager._get_config(group)
    assert config["task"] == GROUPS[group]
    averages = {item["metric"] for item in config.get("aggregate_metric_list") or []}
    assert averages == GROUP_AVERAGES.get(group, set())
    for item in config.get("aggregate_metric_list") or []:
        assert item["aggregation"] == "mean" and item["weight_by_size"] is False
    if group == "auroralong_mvbench":  # the built-in group's tasks, in its order
        builtin = task_manager._get_config("mvbench")["task"]
        assert config["task"] == [PREFIX + name for name in builtin]


class _TaskWithoutData(ConfigurableTask):
    """A ConfigurableTask built from its config only: the real one downloads its dataset in __init__."""

    def __init__(self, data_dir=None, cache_dir=None, download_mode=None, config=None, model_name=None):
        self._config = TaskConfig(**config)
        self.model_name = model_name
        self._prepare_model_specific_config()
        self._prepare_metric_and_aggregation()


def test_group_of_groups_loads_and_averages(task_manager, monkeypatch):
    """`auroralong_paper` (groups inside a group) goes through lmms-eval's own loading, and the VDC group's mean
    of the five accuracies is the paper's "VDC avg" (42.54 from its five figures; lmms-eval reports fractions)."""
    monkeypatch.setattr(lmms_eval.tasks, "ConfigurableTask", _TaskWithoutData)
    task_dict = lmms_eval.tasks.get_task_dict(["auroralong_paper"], task_manager)  # also checks for duplicates
    assert get_subtask_list(task_dict) == GROUPS

    def tasks(tree):
        for key, value in tree.items():
            if isinstance(value, dict):
                assert isinstance(key, ConfigurableGroup)
                yield from tasks(value)
            else:
                yield value

    loaded = {task.task_name: task for task in tasks(task_dict)}
    assert set(loaded) == {task for members in GROUPS.values() for task in members} - set(GROUPS)
    assert all(isinstance(task, _TaskWithoutData) for task in loaded.values())
    assert loaded["auroralong_mvbench_action_count"].lmms_eval_specific_kwargs["sub_task"] == "action_count"

    paper_vdc = {"short": 38.89, "camera": 43.70, "background": 40.26, "main_object": 46.32, "detailed": 43.54}
    results = defaultdict(dict)
    for task in loaded:
        results[task] = {"alias": task, "samples": 100}  # lmms-eval's form: metric,filter and its stderr
    for name, accuracy in paper_vdc.items():
        results[f"auroralong_vdc_{name}"].update(
            {"llmms_eval_acc,none": accuracy / 100, "llmms_eval_score,none": 2.0}
            | {"llmms_eval_acc_stderr,none": "N/A", "llmms_eval_score_stderr,none": "N/A"}
        )
    for index, name in enumerate(MVBENCH):
        results[f"auroralong_mvbench_{name}"].update(
            {"mvbench_accuracy,none": float(index), "mvbench_accuracy_stderr,none": "N/A", "samples": 200 - index}
        )
    results, _, _, _ = consolidate_group_results(results, {}, task_dict)
    assert math.isclose(results["auroralong_vdc"]["llmms_eval_acc,none"] * 100, 42.54, abs_tol=0.005)
    assert results["auroralong_mvbench"]["mvbench_accuracy,none"] == sum(range(20)) / 20  # unweighted
    assert "mvbench_accuracy,none" not in results["auroralong_paper"]
