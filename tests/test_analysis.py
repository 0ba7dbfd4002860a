"""Probabilistic deep learning and the analysis commands: dlx eval, predict, viz, active; task=regress.

Unit facts run in-process (ECE of synthetic predictors, uncertainty measures, the aleatoric loss, the
PIL plots, MC-dropout modes). End to end: three tiny real runs are trained side by side once for the
module (a digits MLP with dropout and per-layer gradient norms, a shapes GAP ResNet without dropout,
the aleatoric_1d preset), then every analysis command runs as a real `dlx` process on them, a few at
a time, and its PNGs (opened with PIL), JSON and TensorBoard files are checked.
"""

import json
import math
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlx.analysis import uncertainty as u
from dlx.analysis.plot import Figure, nice_ticks
from dlx.errors import DlxError
from dlx.losses.regression import GaussianNLL, Heteroscedastic, RegressMSE
from tests.conftest import DLX, events, run_dirs

FAST = ["trainer.progress=false", "trainer.device=cpu"]
# Three runs, trained at once (their start-up overlaps on two cores).
RUNS = {
    "digits": ["model.dropout=0.3", "model.width=64", "trainer.max_steps=60", "trainer.val_every=30",
               "trainer.log_every=10", "trainer.log_grad_norms=true"],
    "shapes": ["model=resnet", "model.depth=8", "model.width=8", "data=shapes", "data.image_size=16",
               "data.n_train=640", "data.n_test=128", "trainer.max_steps=30", "trainer.val_every=30",
               "optimizer.lr=0.01"],
    "hetero": ["experiment=aleatoric_1d", "trainer.max_steps=400", "trainer.val_every=200", "trainer.log_every=50"],
}
PARALLEL = 3  # analysis processes at once


# ---- unit facts -------------------------------------------------------------------------------------
def test_ece_of_a_calibrated_predictor_is_near_zero_and_of_an_overconfident_one_large():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1.0, 50_000)
    correct = rng.uniform(size=conf.shape) < conf  # right exactly as often as it is confident
    assert u.expected_calibration_error(conf, correct) < 0.01
    over = rng.uniform(0.9, 1.0, 50_000)
    correct = rng.uniform(size=over.shape) < over - 0.3  # 30 points less accurate than confident
    assert abs(u.expected_calibration_error(over, correct) - 0.3) < 0.02
    cal = u.calibration(over, correct, bins=15)
    assert len(cal["accuracy"]) == 15 and sum(cal["count"]) == len(over)
    assert cal["count"][-1] > 0 and sum(cal["count"][:13]) == 0  # all in the top bins (0.9, 1]


def test_uncertainty_measures_split_aleatoric_from_epistemic():
    k = 4
    agree = torch.full((10, 1, k), 1 / k)  # every pass equally unsure: all aleatoric
    assert torch.allclose(u.predictive_entropy(agree), torch.tensor([math.log(k)]))
    assert u.mutual_information(agree).item() < 1e-6
    assert u.variation_ratio(agree).item() == 0.0
    onehots = torch.eye(k).repeat(3, 1)[:, None]  # (12, 1, K): each pass sure, passes disagree: epistemic
    assert torch.allclose(u.mutual_information(onehots), torch.tensor([math.log(k)]), atol=1e-5)
    assert abs(u.variation_ratio(onehots).item() - 0.75) < 1e-6


def test_mc_dropout_samples_dropout_only_and_restores_modes():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5),
                                torch.nn.Linear(8, 3), torch.nn.Dropout(0.0))
    model.train()
    with u.mc_dropout(model):
        assert model[2].training and not model[1].training and not model[4].training
        probs = u.mc_probs(model, torch.randn(5, 4), 8)
    assert model.training and model[1].training
    assert probs.shape == (8, 5, 3) and not torch.allclose(probs[0], probs[1])
    with pytest.raises(DlxError, match="model.dropout"):
        u.require_dropout(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.0)), "here")


def test_mc_probs_computes_dropout_free_features_once_with_the_same_draws():
    from dlx.models.bayesian_cnn import BayesianCNN

    model, x = BayesianCNN(1, 10, 28), torch.rand(6, 1, 28, 28)
    assert u.deterministic_features(model) and not u.deterministic_features(torch.nn.Linear(2, 2))
    calls = []
    model.features.register_forward_hook(lambda *_: calls.append(1))
    with u.mc_dropout(model):
        torch.manual_seed(3)
        fast = u.mc_probs(model, x, 5)
        torch.manual_seed(3)  # the whole net per pass: the same dropout masks in the same order
        slow = torch.stack([model(x).float().softmax(-1) for _ in range(5)])
    assert len(calls) == 1 + 5  # once in mc_probs, five times in the plain passes
    torch.testing.assert_close(fast, slow)
    assert not torch.allclose(fast[0], fast[1])  # still stochastic: the classifier's dropout samples


def test_heteroscedastic_loss_is_minimized_at_the_true_log_variance():
    loss = Heteroscedastic()
    residual = torch.tensor([[0.5]])
    s = torch.linspace(-4, 2, 601)
    values = torch.stack([loss(torch.cat([torch.zeros(1, 1), v.view(1, 1)], 1), residual) for v in s])
    assert abs(s[values.argmin()].item() - math.log(0.25)) < 0.02  # argmin_s = log r^2
    out = torch.tensor([[1.0, 0.3]])
    want = 0.5 * math.exp(-0.3) * 0.25 + 0.15
    assert abs(loss(out, torch.tensor([[1.5]])).item() - want) < 1e-6
    mean, log_var = GaussianNLL().predict(torch.tensor([[2.0, 0.0]]))
    assert mean.item() == 2.0 and abs(log_var.exp().item() - math.log(2)) < 1e-5  # softplus(0) = log 2
    homo = GaussianNLL(homoscedastic=True, targets=1)
    assert [n for n, _ in homo.named_parameters()] == ["log_var"]
    with pytest.raises(DlxError, match="model.num_classes=2"):
        loss(torch.zeros(3, 1), torch.zeros(3, 1))
    assert RegressMSE()(torch.ones(2, 1), torch.zeros(2, 1)).item() == 0.5


def test_plots_render_axes_log_scales_and_gaps(tmp_path):
    ticks = nice_ticks(0, 1)
    assert len(ticks) == 6 and ticks[0] == 0 and abs(ticks[-1] - 1) < 1e-9
    fig = Figure("t", xlabel="step", ylabel="norm", logy=True)
    fig.line([0, 1, 2, 3], [1e-3, 0, 1e-1, 10], label="with a non-positive value")  # a gap, no crash
    fig.band([0, 1], [0.1, 0.2], [1, 2], label="band").hist([0.5, 0.6, 0.7], bins=3)
    img = Image.open(fig.save(tmp_path / "p.png"))
    arr = np.asarray(img)
    assert img.size == (720, 480) and arr.min() == 0 and (arr == 255).mean() > 0.5  # ink on a white page


def test_a_band_drawn_after_a_line_leaves_the_line_visible_and_overlaps_blend():
    """dlx compare and dlx claims draw each series' line, then its std band: the band must not paint over lines
    (the lines of earlier series vanished under later bands), and two overlapping bands blend."""
    fig = Figure("t", legend="none", xlim=(0, 10), ylim=(0, 10))
    fig.line([0, 10], [5, 5], color="#ff0000")
    fig.band([0, 10], [2, 2], [8, 8], color="#0000ff", alpha=0.25)
    fig.band([0, 10], [4, 4], [9, 9], color="#00ff00", alpha=0.25)
    arr = np.asarray(fig.render()).astype(int)
    x, y = (round(v) for v in fig.pixel(3, 5))
    r, g, b = arr[y, x]
    assert r > 200 and g < 80 and b < 80, (r, g, b)  # the line, red, on top of both bands
    x, y = (round(v) for v in fig.pixel(3, 7))  # inside both bands: blue and green blended on white
    r, g, b = arr[y, x]
    assert 150 < g < 255 and 150 < b < 255 and r < min(g, b), (r, g, b)


def test_olivetti_faces_fail_in_one_line_offline_and_load_sklearn_cache_files(tmp_path):
    import joblib

    from dlx.data.olivetti import FILE, OlivettiFaces

    with pytest.raises(DlxError, match="data.download=true") as e:
        OlivettiFaces(root=str(tmp_path / "none")).load()
    assert "\n" not in str(e.value) and not (tmp_path / "none").exists()
    faces = np.random.default_rng(0).integers(0, 256, (400, 64 * 64)).astype(np.uint8)
    joblib.dump(faces, tmp_path / FILE, compress=6)  # scikit-learn's own cache format
    splits = OlivettiFaces(root=str(tmp_path)).load()
    x, y = splits.train
    assert x.shape == (320, 1, 64, 64) and x.dtype == torch.uint8 and len(splits.test[0]) == 80
    assert torch.bincount(splits.test[1]).tolist() == [2] * 40 and len(splits.classes) == 40


@pytest.mark.parametrize("preset", ["mc_dropout_mnist", "aleatoric_1d", "cam_shapes", "eigendigits", "tsne_mnist"])
def test_presets_compose_and_their_models_fit_the_analysis(preset):
    """Each preset composes and checks like `dlx train experiment=...`; its model has what its command needs."""
    from omegaconf import OmegaConf

    from dlx import build, config
    from dlx.analysis.cam import gap_linear
    from dlx.analysis.embed import penultimate

    cfg, _ = config.check([f"experiment={preset}"])
    OmegaConf.resolve(cfg)
    assert cfg.name == preset
    model = build.create(cfg.model, "model").eval()
    d = cfg.data
    x = torch.randn(2, 1) if preset == "aleatoric_1d" else torch.randn(2, d.channels, d.size, d.size)
    out = model(x)
    if preset == "mc_dropout_mnist":
        u.require_dropout(model, preset)
    if preset == "cam_shapes":
        gap_linear(model)
    if preset == "aleatoric_1d":
        assert out.shape == (2, 2) and cfg.task._target_.endswith("Regress")
    if preset == "tsne_mnist":
        assert penultimate(model, x).shape[0] == 2
    if preset == "eigendigits":
        assert cfg.data.normalize is False


# ---- end to end ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train the three runs side by side; their folders by key."""
    procs = {}
    for key, args in RUNS.items():
        cwd = tmp_path_factory.mktemp(key)
        procs[key] = (cwd, subprocess.Popen([DLX, "train", *args, *FAST, f"paths.experiments={cwd}"], cwd=cwd,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = {}
    for key, (cwd, proc) in procs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{key}: {err[-2000:]}"
        (out[key],) = run_dirs(cwd)
    return out


def _images(folder: Path) -> dict[str, Path]:
    """content.png and style.png for style transfer and predict, drawn with PIL."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:32, 0:32]
    content = np.zeros((32, 32, 3), np.uint8)
    content[...] = (200, 180, 40)
    content[(xx - 16) ** 2 + (yy - 16) ** 2 < 80] = (60, 20, 140)
    style = np.stack([((xx + yy) // 3 % 2) * 255, xx * 0, ((xx - yy) // 4 % 2) * 200], -1).astype(np.uint8)
    from sklearn.datasets import load_digits

    digit = (load_digits().images[0] * 255 / 16).astype(np.uint8)
    paths = {"content": folder / "content.png", "style": folder / "style.png", "digit": folder / "digit.png"}
    Image.fromarray(content).save(paths["content"])
    Image.fromarray(style).save(paths["style"])
    Image.fromarray(digit).resize((24, 24)).save(paths["digit"])
    return paths


def commands(runs: dict[str, Path], tmp: Path) -> dict[str, list[str]]:
    """Every analysis command under test, by name."""
    d, s, h = (str(runs[k]) for k in ("digits", "shapes", "hetero"))
    img = _images(tmp / "images")
    return {
        "eval_mc": ["eval", d, "--mc-samples", "10"],
        "eval_no_dropout": ["eval", s, "--mc-samples", "10"],
        "predict": ["predict", d, str(img["digit"]), str(img["content"]), "--top-k", "3", "--mc-samples", "5"],
        "cam": ["viz", "cam", s, "--n", "4"],
        "saliency": ["viz", "saliency", s, "--n", "3", "--layer", "features.layer1", "--unit", "1"],
        "filters": ["viz", "filters", s, "--layer", "features.layer1"],
        "embed": ["viz", "embed", d, "--n", "200"],
        "eigen": ["viz", "eigen", "--data", "digits", "--k", "8", "--out", str(tmp / "eigen"),
                  f"paths.experiments={tmp}"],
        "gradflow": ["viz", "gradflow", d],
        "dream": ["viz", "dream", s, "--layer", "features.layer1", "--steps", "5"],
        "invert": ["viz", "invert", s, "--layer", "features.stem", "--steps", "40"],
        "style": ["viz", "style", "--content", str(img["content"]), "--style", str(img["style"]), "--run", s,
                  "--size", "16", "--steps", "15", "--out", str(tmp / "style")],
        "regress": ["viz", "regress", h],
    }


@pytest.fixture(scope="module")
def results(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    """Run every analysis command as a real `dlx` process, PARALLEL at a time; their outcomes by name."""
    tmp = tmp_path_factory.mktemp("analysis")
    # An empty torch hub cache: VGG-19 weights are never there, whatever this machine has downloaded.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DLX_")}, "TORCH_HOME": str(tmp / "hub"),
           "COLUMNS": "200"}
    todo = list(commands(runs, tmp).items())
    running: dict[str, subprocess.Popen] = {}
    done = {}
    while todo or running:
        while todo and len(running) < PARALLEL:
            name, args = todo.pop(0)
            running[name] = subprocess.Popen([DLX, *args], cwd=tmp, env=env, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                out, err = proc.communicate()
                done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
                del running[name]
        time.sleep(0.05)
    return done


def ok(results: dict, name: str) -> subprocess.CompletedProcess:
    r = results[name]
    assert r.returncode == 0, f"dlx {name} failed: {r.stderr[-3000:]}"
    return r


def refused(results: dict, name: str, *phrases: str) -> str:
    """A user error: exit 2, one line on stderr, no traceback."""
    r = results[name]
    assert r.returncode == 2, f"{name}: rc={r.returncode} {r.stderr[-2000:]}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlx: error:") and "Traceback" not in r.stderr, r.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def refused_in_process(capsys: pytest.CaptureFixture, argv: list[str], *phrases: str) -> str:
    """The same CLI entry point in this process (no start-up cost): exit 2 and one line naming the problem."""
    from dlx.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("dlx: error:"), err
    for phrase in phrases:
        assert phrase in err, err
    return err


def test_refusals_without_vgg_weights_or_dropout(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))  # an empty hub cache: no VGG-19 weights
    content = _images(tmp_path)["content"]
    refused_in_process(capsys, ["viz", "style", "--content", str(content), "--style", str(content)], "VGG-19", "--run")
    refused_in_process(capsys, ["active", f"paths.experiments={tmp_path}", "--rounds", "1", "trainer.max_steps=5"],
                       "MC-dropout", "model.dropout")
    refused_in_process(capsys, ["viz", "dream", str(runs["shapes"]), "--layer", "nope"], "nope", "features.stem")
    refused_in_process(capsys, ["viz", "gradflow", str(runs["shapes"])], "trainer.log_grad_norms=true")
    refused_in_process(capsys, ["eval", str(tmp_path)], "checkpoints")


def png(path: Path) -> Image.Image:
    img = Image.open(path)
    img.load()
    assert img.width > 20 and img.height > 20
    return img


def printed_paths(r: subprocess.CompletedProcess) -> list[Path]:
    return [Path(line) for line in r.stdout.splitlines() if line.endswith((".png", ".json"))]


def test_eval_with_mc_dropout_writes_metrics_plots_and_tensorboard(runs, results):
    ok(results, "eval_mc")
    run = runs["digits"]
    report = json.loads((run / "eval-test.json").read_text())
    m, mc = report["metrics"], report["mc_dropout"]
    assert report["split"] == "test" and mc["samples"] == 10
    assert 0.3 < m["acc"] <= 1 and 0 <= m["ece"] <= 1 and m["nll"] > 0
    assert mc["mutual_information"] > 0 and mc["entropy"] >= mc["expected_entropy"]
    assert 0.3 < mc["acc"] <= 1 and len(mc["calibration"]["accuracy"]) == 15
    for name in ("reliability-test", "uncertainty-test", "reliability-mc-test", "uncertainty-mc-test"):
        png(run / "eval" / f"{name}.png")
    acc = events(run / "eval")
    assert {"eval/test/acc", "eval/test/ece", "eval/test/mc_mutual_information"} <= set(acc.Tags()["scalars"])
    assert "reliability-mc-test" in acc.Tags()["images"]


def test_mc_dropout_on_a_model_without_dropout_is_refused_in_one_line(results):
    refused(results, "eval_no_dropout", "MC-dropout", "model.dropout")


def test_predict_prints_one_json_line_per_file_with_topk_and_uncertainty(results):
    r = ok(results, "predict")
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(x["file"]).name for x in lines] == ["digit.png", "content.png"]
    for line in lines:
        probs = [t["prob"] for t in line["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5
        assert {t["class"] for t in line["top"]} <= {str(i) for i in range(10)}
        assert line["entropy"] >= 0 and line["mutual_information"] >= 0 and line["mc_samples"] == 5


def test_cam_overlays_maps_and_measures_mask_mass_on_shapes(runs, results, capsys):
    r = ok(results, "cam")
    numbers = json.loads((runs["shapes"] / "viz" / "cam.json").read_text())
    assert numbers["images"] == 128 and 0 < numbers["mask_area"] < 0.5
    assert 0 <= numbers["cam_mass_in_mask"] <= 1 and 0 <= numbers["pointing_game"] <= 1
    img = png(runs["shapes"] / "viz" / "cam.png")
    assert img.height > img.width  # 4 rows of (image, CAM true, CAM predicted)
    assert runs["shapes"] / "viz" / "cam.png" in printed_paths(r)
    refused_in_process(capsys, ["viz", "cam", str(runs["digits"])], "global-average-pooling", "MLP")


def test_saliency_projects_a_unit_by_three_rules_beside_cam(runs, results):
    r = ok(results, "saliency")
    png_path, json_path = (runs["shapes"] / "viz" / f"saliency-features.layer1-1.{ext}" for ext in ("png", "json"))
    numbers = json.loads(json_path.read_text())
    assert numbers["target"] == "features.layer1[1]" and numbers["images"] == 3
    for rule in ("deconvnet", "guided"):  # not the gradient: the ReLU rules change the map
        assert numbers[f"cosine_{rule}_vs_gradient"] < 0.999, numbers
    img = png(png_path)
    assert img.width > img.height  # 4 columns (image, gradient, deconvnet, guided), 3 rows
    assert png_path in printed_paths(r)


def test_filters_and_feature_maps(runs, results):
    ok(results, "filters")
    png(runs["shapes"] / "viz" / "filters.png")
    png(runs["shapes"] / "viz" / "maps-features.layer1.png")


def test_embed_writes_projector_and_scatter_plots(runs, results):
    ok(results, "embed")
    viz = runs["digits"] / "viz"
    numbers = json.loads((viz / "embed.json").read_text())
    assert numbers["samples"] == 200 and numbers["dims"] == 64
    assert numbers["knn5_acc_features"] > 0.5  # a trained net clusters the classes
    png(viz / "tsne.png")
    png(viz / "pca.png")
    config = next(viz.rglob("projector_config.pbtxt")).read_text()
    assert "metadata_path" in config and "sprite" in config


def test_eigen_images_and_ood_detection_on_digits(results, tmp_path_factory):
    r = ok(results, "eigen")
    folder = printed_paths(r)[0].parent
    numbers = json.loads((folder / "eigen.json").read_text())
    assert numbers["k"] == 8 and 0.5 < numbers["explained_variance"] < 1
    assert numbers["ood_auroc"] > 0.9 and numbers["distance_out"] > numbers["distance_in"]
    for name in ("eigen-images", "eigen-reconstructions", "eigen-variance", "eigen-ood"):
        png(folder / f"{name}.png")


def test_gradflow_plots_the_logged_layer_norms(runs, results):
    ok(results, "gradflow")
    numbers = json.loads((runs["digits"] / "viz" / "gradflow.json").read_text())
    assert numbers["layers"][0].startswith("features") and numbers["layers"][-1] == "classifier"
    assert numbers["steps"] == [10, 20, 30, 40, 50, 60]
    png(runs["digits"] / "viz" / "gradflow.png")
    png(runs["digits"] / "viz" / "gradflow-layers.png")


def test_dream_raises_the_layer_activation_and_invert_matches_the_code(runs, results):
    ok(results, "dream")
    ok(results, "invert")
    viz = runs["shapes"] / "viz"
    dream = json.loads((viz / "dream-features.layer1.json").read_text())
    assert dream["objective_after"] > dream["objective_before"]
    inv = json.loads((viz / "invert-features.stem.json").read_text())
    assert inv["code_error"] < 0.5 * inv["code_error_start"]
    png(viz / "dream-features.layer1.png")
    png(viz / "invert-features.stem.png")


def test_style_transfer_with_a_trained_conv_net_and_without_vgg_weights(results):
    r = ok(results, "style")
    assert "no VGG-19 weights" in r.stdout  # it fell back to --run
    folder = printed_paths(r)[0].parent
    numbers = json.loads((folder / "style.json").read_text())
    assert numbers["style_loss"] < numbers["style_loss_start"]
    assert png(folder / "style.png").width > 3 * 16


def test_aleatoric_model_predicts_noise_growing_with_x(runs, results):
    ok(results, "regress")
    numbers = json.loads((runs["hetero"] / "viz" / "regress.json").read_text())
    sigma, true = np.array(numbers["sigma"]), np.array(numbers["true_sigma"])
    assert sigma[-20:].mean() > 2 * sigma[:20].mean()  # true noise: 0.05 at x = -1, 0.35 at x = 1
    assert numbers["sigma_correlation"] > 0.8
    assert np.abs(sigma - true).mean() < 0.1
    png(runs["hetero"] / "viz" / "regress.png")



def test_mask_mass_and_pointing_game_on_synthetic_maps():
    from dlx.analysis.cam import mass_in_mask, pointing_hit

    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, 2:4, 2:4] = True  # area 4 / 64
    inside = torch.zeros(2, 8, 8)
    inside[0, 2:4, 2:4] = 5.0  # all the map's mass in the mask
    inside[1] = 3.0  # a flat map with one peak outside the mask: scaled to [0, 1], only the peak has mass
    inside[1, 7, 7] = 4.0
    mass = mass_in_mask(inside, mask)
    assert mass[0].item() == pytest.approx(1.0) and mass[1].item() == pytest.approx(0.0)
    assert pointing_hit(inside, mask).tolist() == [True, False]


@pytest.mark.slow
def test_cam_of_a_trained_shapes_net_lights_up_the_shape(tmp_path):
    """The cam_shapes preset (shortened): CAM mass inside the mask well above the mask's area."""
    train = subprocess.run([DLX, "train", "experiment=cam_shapes", "trainer.max_steps=600", "trainer.val_every=200",
                            *FAST, f"paths.experiments={tmp_path}"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=1800)
    assert train.returncode == 0, train.stderr[-2000:]
    (run,) = run_dirs(tmp_path)
    r = subprocess.run([DLX, "viz", "cam", str(run)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    numbers = json.loads((run / "viz" / "cam.json").read_text())
    assert numbers["cam_mass_in_mask"] > 1.5 * numbers["mask_area"]
    assert numbers["pointing_game"] > 0.4
