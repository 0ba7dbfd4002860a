"""Unsupervised and generative tasks: autoencoders, VAE, GAN, segmentation, PixelCNN, `dlx sample`.

Unit facts run in-process on the real configs (compose -> build -> a few real Stepper updates on digits
or shapes). End to end, five real `dlx train` processes run side by side (the presets on digits, a
sweep for three of them, so the start-up is paid once per task family): losses fall, image grids
reach the TensorBoard event file, and `dlx sample` writes PNGs of the right size from their runs.
"""

import math
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image

from dlx import build
from dlx.config import compose
from dlx.errors import ConfigError, DlxError
from dlx.losses.gan import GANLoss
from dlx.losses.reconstruction import Reconstruction
from dlx.models.autoencoder import Autoencoder
from dlx.models.dcgan import DCGAN
from dlx.models.fcn import FCN
from dlx.models.mlp_gan import MLPGAN
from dlx.models.pixelcnn import PixelCNN
from dlx.models.segnet import SegNet
from dlx.models.vae_net import VAENet
from dlx.stepper import Stepper
from dlx.tasks.corrupt import corrupt
from dlx.tasks.segment import confusion_matrix, mean_iou
from dlx.tasks.vae import kl_standard_normal
from tests.conftest import DLX, events, metrics_lines, run_dirs, summary

FAST = ["trainer.progress=false", "trainer.log_every=10", "trainer.device=cpu"]


# ---- in-process helpers ----------------------------------------------------------------------------
@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster than several that spin while `dlx train` runs beside them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def built(*overrides: str):  # noqa: ANN201 - (cfg, data, task)
    """Compose the real config, set up its data on the CPU and build its task (as dlx.prepare.setup does)."""
    cfg = compose(list(overrides))
    OmegaConf.resolve(cfg)  # as the Hydra job does before building
    torch.manual_seed(0)
    data = build.build_data(cfg, torch.device("cpu"))
    task = build.build_task(cfg)
    task.on_fit_start(data)
    return cfg, data, task


def stepper_for(cfg, task) -> Stepper:  # noqa: ANN001
    optimizers = build.build_optimizers(cfg, task, torch.device("cpu"))
    schedulers = build.build_schedulers(cfg, optimizers, 100)
    return Stepper(optimizers, schedulers)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {k for k, v in module.named_parameters() if not torch.equal(v, before[k])}


# ---- GAN -------------------------------------------------------------------------------------------
def test_gan_optimizers_only_update_their_own_network():
    cfg, data, task = built("experiment=dcgan_mnist", "data=digits", "task.fid_samples=0")
    stepper = stepper_for(cfg, task)
    G, D = task.model.generator, task.model.discriminator
    groups = task.param_groups()
    assert {id(p) for p in groups["gen"]} == {id(p) for p in G.parameters()}
    assert {id(p) for p in groups["disc"]} == {id(p) for p in D.parameters()}
    calls = []

    def step(name: str, loss: torch.Tensor) -> None:
        before_g, before_d = snapshot(G), snapshot(D)
        stepper(name, loss)
        moved_g, moved_d = changed(G, before_g), changed(D, before_d)
        if name == "disc":
            assert moved_d and not moved_g, f"a disc update moved generator weights {sorted(moved_g)}"
        else:
            assert moved_g and not moved_d, f"a gen update moved discriminator weights {sorted(moved_d)}"
        calls.append(name)

    task.k = 2  # Algorithm 1 with k = 2: two D updates, then one G update, per training step
    for batch in list(data.batches("train"))[:3]:
        metrics = task.training_step(batch, step)
        assert all(p.grad is None for p in D.parameters()), "the G step must leave no gradient on D"
    assert calls == ["disc", "disc", "gen"] * 3
    assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(metrics)
    assert 0 < float(metrics["d_real"]) < 1 and 0 < float(metrics["d_fake"]) < 1


def test_gan_losses_follow_the_value_function():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    d = lambda x: torch.sigmoid(x)  # noqa: E731
    minimax, nonsat = GANLoss("minimax"), GANLoss("nonsat", label_smoothing=0.1)
    want_d = -(torch.log(d(real)).mean() + torch.log(1 - d(fake)).mean())
    assert torch.allclose(minimax.discriminator(real, fake), want_d, atol=1e-6)
    assert torch.allclose(minimax.generator(fake), torch.log(1 - d(fake)).mean(), atol=1e-6)
    assert torch.allclose(nonsat.generator(fake), -torch.log(d(fake)).mean(), atol=1e-6)
    smooth = -(0.9 * torch.log(d(real)) + 0.1 * torch.log(1 - d(real))).mean() - torch.log(1 - d(fake)).mean()
    assert torch.allclose(nonsat.discriminator(real, fake), smooth, atol=1e-6)  # one-sided: fakes stay at 0


@pytest.mark.parametrize("size", [8, 28, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_generators_and_autoencoders_fit_every_image_size(size: int, channels: int):
    x = torch.rand(2, channels, size, size)
    for gan in (DCGAN(channels, size, latent_dim=8, width=8), MLPGAN(channels, size, latent_dim=8, hidden=[16])):
        fake = gan.generator(torch.randn(2, 8))
        assert fake.shape == x.shape and fake.abs().max() <= 1 and gan(fake).shape == (2,)
    for arch in ("mlp", "conv"):
        assert Autoencoder(channels, size, 4, arch, hidden=[8, 8]).forward(x).shape == x.shape
        assert VAENet(channels, size, 2, arch, hidden=[8]).forward(x).shape == x.shape
    for seg in (SegNet(channels, 3, widths=[4, 8]), FCN(channels, 3, widths=[4, 8])):
        assert seg(x).shape == (2, 4, size, size)  # 3 classes + background


# ---- autoencoders ----------------------------------------------------------------------------------
def test_denoising_loss_compares_with_the_clean_input():
    cfg, data, task = built("experiment=dae_mnist", "data=digits", "task.noise=masking", "task.noise_level=0.5",
                            "model.arch=mlp", "model.hidden=[32]")
    x = next(data.batches("train"))[0]
    seen = []
    torch.manual_seed(1)
    task.training_step((x,), lambda name, loss: seen.append(loss.detach()))
    torch.manual_seed(1)
    noisy = corrupt(x, "masking", 0.5)
    assert (noisy != x).float().mean() > 0.2  # masking really hid values
    out = task.model(noisy)
    assert torch.allclose(seen[0], F.mse_loss(out, x)), "the loss must compare with the clean input"
    assert not torch.allclose(seen[0], F.mse_loss(out, noisy))
    metrics = task.validation_step((x,))
    assert metrics["input_mse"] > 0 and {"mse", "pca_mse", "loss"} <= set(metrics)


@pytest.mark.parametrize("noise", ["gaussian", "masking", "salt_pepper"])
def test_corruptions_change_the_input_by_their_level(noise: str):
    x = torch.rand(64, 1, 8, 8)
    y = corrupt(x, noise, 0.3, torch.Generator().manual_seed(0))
    if noise == "gaussian":
        assert abs(float((y - x).std()) - 0.3) < 0.03
    else:
        assert abs(float((y != x).float().mean()) - 0.3) < 0.05
        assert set(y[y != x].unique().tolist()) <= {float(x.min()), float(x.max())}
    assert torch.equal(x, x.clone())  # the clean batch is not modified in place


def test_pca_baseline_is_sklearns_pca_at_the_code_size():
    from sklearn.decomposition import PCA

    cfg, data, task = built("experiment=ae_mnist", "data=digits", "model.code_size=12")
    train = torch.cat([b[0] for b in data.batches("train")]).flatten(1).double().numpy()
    pca = PCA(n_components=12).fit(train)
    x = next(data.batches("val"))[0]
    want = pca.inverse_transform(pca.transform(x.flatten(1).double().numpy()))
    got = task.pca_reconstruct(x).flatten(1).double().numpy()
    assert abs(((got - x.flatten(1).numpy()) ** 2).mean() - ((want - x.flatten(1).numpy()) ** 2).mean()) < 1e-5
    assert float(task.validation_step((x,))["pca_mse"]) > 0


def test_reconstruct_refuses_a_classification_loss_and_bce_on_standardized_pixels():
    with pytest.raises(ConfigError, match="loss=recon_mse"):
        built("task=reconstruct", "model=autoencoder")
    with pytest.raises(ConfigError, match="data.normalize"):
        built("task=reconstruct", "model=autoencoder", "loss=recon_bce")


def test_stacked_pretrains_layer_by_layer_then_fine_tunes():
    cfg, data, task = built("experiment=stacked_ae", "data=digits", "model.hidden=[32]", "model.code_size=8",
                            "task.pretrain_steps=2")
    stepper = stepper_for(cfg, task)
    enc, dec = task.model.encoder_layers, task.model.decoder_layers
    phases = []
    for batch in list(data.batches("train"))[:6]:
        before = snapshot(task)
        phase = int(task.training_step(batch, stepper)["phase"])
        moved = changed(task, before)
        phases.append(phase)
        if phase < 2:  # only layer `phase` of the encoder and its decoder move
            layer = (f"model.encoder_layers.{phase}.", f"model.decoder_layers.{phase}.")
            assert moved and all(k.startswith(layer) for k in moved), moved
        else:  # fine-tuning: the classifier and the encoder, never the decoder
            assert {"head.weight", "head.bias"} <= moved and "model.encoder_layers.0.0.weight" in moved
            assert not any(k.startswith("model.decoder") for k in moved), moved
    assert phases == [0, 0, 1, 1, 2, 2] and len(enc) == len(dec) == 2
    state = task.state_dict()
    _, _, fresh = built("experiment=stacked_ae", "data=digits", "model.hidden=[32]", "model.code_size=8",
                        "task.pretrain_steps=2")
    fresh.load_state_dict(state)
    assert fresh.steps_done == 6 and fresh.phase() == 2  # a resume continues the schedule


def test_reconstruction_nll_is_the_decoders_log_likelihood():
    out, x = torch.randn(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    normal = torch.distributions.Normal(out, 0.1).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(Reconstruction("mse", scale=0.1).nll(out, x), -normal, atol=1e-4)
    laplace = torch.distributions.Laplace(out, 0.2).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(Reconstruction("mae", scale=0.2).nll(out, x), -laplace, atol=1e-4)
    bern = torch.distributions.Bernoulli(logits=out, validate_args=False).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(Reconstruction("bce").nll(out, x), -bern, atol=1e-4)


# ---- VAE -------------------------------------------------------------------------------------------
def test_vae_neg_elbo_is_recon_plus_kl_and_beta_weights_only_the_loss():
    cfg, data, task = built("experiment=vae_mnist", "data=digits", "task.beta=4")
    x = next(data.batches("val"))[0]
    torch.manual_seed(0)
    m = task.validation_step((x,))
    assert torch.allclose(m["neg_elbo"], m["recon"] + m["kl"])
    assert torch.allclose(m["loss"], m["recon"] + 4 * m["kl"])
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    assert torch.allclose(kl_standard_normal(mu, logvar), torch.distributions.kl_divergence(q, p).sum(1), atol=1e-5)
    assert 0 < float(m["recon"]) < 64 * math.log(2) * 2  # nats per 8x8 image: a real likelihood, not a mean


# ---- segmentation ----------------------------------------------------------------------------------
def test_miou_is_computed_over_the_whole_split():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 0, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 0]])
    # class 0: tp 3, fp 1, fn 1 -> 3/5; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 1/2
    assert torch.isclose(mean_iou(confusion_matrix(pred, target, 4)), torch.tensor((3 / 5 + 2 / 3 + 1 / 2) / 3))
    cfg, data, task = built("experiment=segnet_shapes", "data.n_train=200", "data.n_test=50", "data.image_size=16",
                            "data.eval_batch_size=16", "model.widths=[8,16]")
    task.eval()
    batches = list(data.batches("val"))
    assert len(batches) > 1
    for b in batches:
        task.validation_step(b)
    got = task.on_validation_end(data)["miou"]
    with torch.no_grad():
        preds = torch.cat([task.model(b[0]).argmax(1) for b in batches])
    masks = torch.cat([b[2] for b in batches])
    assert torch.isclose(got, mean_iou(confusion_matrix(preds, masks, 4)))
    assert task.on_validation_end(data) == {}  # the confusion matrix is reset for the next evaluation


# ---- PixelCNN --------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
def test_pixelcnn_sees_only_earlier_pixels_and_colours(channels: int):
    torch.manual_seed(0)
    model = PixelCNN(channels, levels=4, width=6 * channels, layers=2, first_kernel=5)
    x = torch.randn(1, channels, 6, 6, requires_grad=True)
    out = model(x)  # (1, levels, C, H, W)
    for c, i, j in [(0, 2, 3), (channels - 1, 4, 1), (channels - 1, 0, 0)]:
        (grad,) = torch.autograd.grad(out[0, :, c, i, j].sum(), x, retain_graph=True)
        for cc in range(channels):
            for ii in range(6):
                for jj in range(6):
                    earlier = (ii, jj) < (i, j) or ((ii, jj) == (i, j) and cc < c)
                    if not earlier:
                        assert grad[0, cc, ii, jj] == 0, f"output {(c, i, j)} sees input {(cc, ii, jj)}"
        if (i, j) == (2, 3):
            assert grad[0, :, 1, 3].abs().sum() > 0  # and it does see the pixel above


def test_pixelcnn_bits_per_dim_and_sampling():
    cfg, data, task = built("task=autoregress", "model=pixelcnn", "model.width=8", "model.layers=1",
                            "model.levels=4")
    x = next(data.batches("val"))[0]
    m = task.validation_step((x,))
    assert torch.isclose(m["bits_per_dim"] * math.log(2) * 64, m["nll"], rtol=1e-4)
    assert 0 < float(m["bits_per_dim"]) < 4  # an untrained 4-level model: about log2(4) = 2 bits
    images = task.sample(3, torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 8, 8)
    assert torch.allclose(images * 3, (images * 3).round(), atol=1e-5) and 0 <= images.min() <= images.max() <= 1


# ---- end to end: dlx train, TensorBoard, dlx sample ------------------------------------------------
RUNS = {
    # Three presets in one process: a sweep over experiments (each job its own run folder).
    "sweep": ["-m", "experiment=ae_mnist,dae_mnist,vae_2d_manifold", "data=digits", "trainer.max_steps=60",
              "trainer.val_every=30", "data.batch_size=32"],
    "gan": ["experiment=dcgan_mnist", "data=digits", "trainer.max_steps=30", "trainer.val_every=15",
            "task.judge_steps=40", "task.fid_samples=200", "model.width=16", "data.batch_size=32"],
    "segment": ["experiment=segnet_shapes", "data.n_train=600", "data.n_test=100", "data.image_size=16",
                "model.widths=[8,16]", "trainer.max_steps=60", "trainer.val_every=30", "data.batch_size=32"],
    "pixelcnn": ["task=autoregress", "model=pixelcnn", "model.width=16", "model.layers=1", "model.levels=17",
                 "task.visual_samples=4", "trainer.max_steps=60", "trainer.val_every=30", "optimizer.lr=3e-3"],
    "stacked": ["experiment=stacked_ae", "data=digits", "model.hidden=[64]", "task.pretrain_steps=15",
                "trainer.max_steps=100", "trainer.val_every=50", "optimizer.lr=3e-3"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Start every `dlx train` at once (they overlap their start-up on the two cores), then wait for all."""
    # One thread each: five processes share the cores, and idle intra-op threads would only spin.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DLX_")}, "OMP_NUM_THREADS": "1"}
    procs = {}
    for key, args in RUNS.items():
        cwd = tmp_path_factory.mktemp(key)
        procs[key] = (cwd, subprocess.Popen([DLX, "train", *args, *FAST, f"paths.experiments={cwd}"], cwd=cwd, env=env,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = {}
    for key, (cwd, proc) in procs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{key}: {err[-2000:]}"
        out[key] = run_dirs(cwd)
    return out


def by_name(dirs: list[Path], name: str) -> Path:
    (hit,) = [d for d in dirs if summary(d)["name"] == name]
    return hit


def losses(run_dir: Path, key: str = "train/loss") -> list[float]:
    return [m[key] for m in metrics_lines(run_dir) if key in m]


@pytest.mark.parametrize("name,images", [
    ("ae_mnist", {"reconstruction"}), ("dae_mnist", {"denoising"}),
    ("vae_2d_manifold", {"reconstruction", "samples", "manifold"}),
])
def test_autoencoder_and_vae_presets_learn_and_draw(runs, name: str, images: set[str]):
    run = by_name(runs["sweep"], name)
    s = summary(run)
    assert s["status"] == "completed"
    curve = losses(run)
    assert len(curve) == 6 and curve[-1] < curve[0], curve
    assert images <= set(events(run).Tags()["images"])
    final = s["metrics"]["final"]
    if name == "vae_2d_manifold":
        assert math.isclose(final["test/neg_elbo"], final["test/recon"] + final["test/kl"], rel_tol=1e-4)
    else:
        assert final["test/mse"] > 0 and final["test/pca_mse"] > 0  # the PCA baseline, in the same run
    if name == "dae_mnist":
        assert final["test/mse"] < final["test/input_mse"]  # denoised is closer to clean than the noisy input


def test_gan_run_logs_both_players_samples_and_a_frechet_score(runs):
    (run,) = runs["gan"]
    lines = metrics_lines(run)
    train = [m for m in lines if "train/d_loss" in m]
    assert train and all(math.isfinite(m["train/g_loss"]) and 0 < m["train/d_real"] < 1 for m in train)
    assert {"lr/gen", "lr/disc"} <= set(train[-1])
    fids = [m["val/fid"] for m in lines if "val/fid" in m]
    assert len(fids) == 2 and all(f > 0 and math.isfinite(f) for f in fids)
    assert summary(run)["metrics"]["final"]["val/judge_acc"] > 0.5  # the judge really learned the digits
    assert {"samples", "real"} <= set(events(run).Tags()["images"])


def test_segment_run_learns_masks(runs):
    (run,) = runs["segment"]
    curve = losses(run)
    assert curve[-1] < curve[0], curve
    final = summary(run)["metrics"]["final"]
    assert 0 < final["test/miou"] <= 1 and final["test/pixel_acc"] > 0.5
    assert "segmentation" in events(run).Tags()["images"]


def test_pixelcnn_run_lowers_bits_per_dim(runs):
    (run,) = runs["pixelcnn"]
    curve = losses(run, "train/bits_per_dim")
    assert curve[-1] < curve[0], curve
    assert {"samples", "real"} <= set(events(run).Tags()["images"])


def test_stacked_preset_pretrains_then_classifies(runs):
    (run,) = runs["stacked"]
    phases = [m["train/phase"] for m in metrics_lines(run) if "train/phase" in m]
    assert phases[0] == 0 and phases[-1] == 2  # [64] hidden + code: two layers, then fine-tuning
    assert summary(run)["metrics"]["final"]["test/acc"] > 0.3  # chance is 0.1
    assert "reconstruction" in events(run).Tags()["images"]


@pytest.mark.parametrize("key,name", [("sweep", "vae_2d_manifold"), ("gan", None), ("pixelcnn", None)])
def test_dlx_sample_writes_a_png_grid_of_the_right_size(runs, tmp_path: Path, key: str, name: str | None):
    from dlx.sample import main

    run = by_name(runs[key], name) if name else runs[key][0]
    out = tmp_path / "grid.png"
    assert main([str(run), "--n", "12", "--out", str(out)]) == 0
    side = 8 + 2  # 8x8 digits, 2 pixels of padding
    assert Image.open(out).size == (8 * side + 2, 2 * side + 2)  # 12 images: 8 per row, 2 rows
    if key != "pixelcnn":
        assert main([str(run), "--interpolate", "--n", "12", "--steps", "4", "--out", str(out)]) == 0
        assert Image.open(out).size == (4 * side + 2, 3 * side + 2)  # 3 walks of 4 points


def test_dlx_sample_refuses_runs_that_are_not_generative(runs):
    from dlx.sample import main

    with pytest.raises(DlxError, match="needs a generative run"):
        main([str(by_name(runs["sweep"], "ae_mnist"))])
    with pytest.raises(DlxError, match="no latent space"):
        main([str(runs["pixelcnn"][0]), "--interpolate"])
    done = subprocess.run([DLX, "sample", str(runs["segment"][0])], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def test_presets_compose_with_their_documentation():
    for preset in ("ae_mnist", "dae_mnist", "sparse_ae", "stacked_ae", "vae_mnist", "vae_2d_manifold",
                   "dcgan_mnist", "cgan_mnist", "segnet_shapes"):
        path = Path(__file__).resolve().parents[1] / "conf" / "experiment" / f"{preset}.yaml"
        text = path.read_text()
        assert text.startswith("# @package _global_") and "Look at:" in text, preset
        cfg = compose([f"experiment={preset}"])
        assert cfg.name == preset
        assert OmegaConf.select(cfg, "data._target_")
