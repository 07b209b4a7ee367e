"""PyTorch engine: build, one optimizer step, evaluate, checkpoint.

Fast paths (each switchable in the config): bf16 autocast where the CPU has native
bf16 (AVX512-BF16/AMX) or on CUDA, fp16 autocast with a GradScaler on CUDA,
channels_last, the fused optimizer step, ``torch.compile``, ``inference_mode`` for evaluation.

Under torchrun the model trains wrapped in DistributedDataParallel (see
:mod:`alexbench.distributed`); evaluation and checkpoints use the plain module, so a
checkpoint reads the same whether 1 or N processes wrote it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from alexbench import checkpoint as ckpt
from alexbench import distributed
from alexbench.atomic import strict_json
from alexbench.config import TrainConfig
from alexbench.data.stream import Normalization
from alexbench.errors import UserError
from alexbench.frameworks import cpu_has_bf16, import_torch


class TorchEngine:
    framework = "torch"

    def __init__(self, cfg: TrainConfig, num_classes: int, norm: Normalization, input_size: int) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.norm = norm
        self.input_size = input_size
        self.torch = import_torch(cfg.threads)
        self.dist = distributed.current()
        self.device = self._pick_device(cfg.device)
        self.precision = self._pick_precision(cfg.precision)
        self.model: Any = None  # torch.nn.Module after build(); torch is not type-checked here
        self.optimizer: Any = None
        self._step_fn = None

    # -- device and dtype, chosen in one place -------------------------------------------------
    def _pick_device(self, want: str) -> str:
        torch = self.torch
        if self.dist.backend == "nccl":  # one GPU per process: the one of its local rank
            return f"cuda:{self.dist.local_rank}"
        if want == "auto":
            if torch.cuda.is_available():
                return "cuda"
            if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
                return "mps"
            return "cpu"
        if want.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device: {want!r} asked for but CUDA is not available in this torch build/machine")
        if want == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError("device: 'mps' asked for but not available")
        return want

    def _pick_precision(self, want: str) -> str:
        torch = self.torch
        on_cuda = self.device.startswith("cuda")
        bf16_ok = (on_cuda and torch.cuda.is_bf16_supported()) or (self.device == "cpu" and cpu_has_bf16())
        if want == "auto":
            return "bf16" if bf16_ok else "fp32"
        if want == "bf16" and not bf16_ok and self.device == "cpu":
            raise UserError("precision: bf16 asked for but this CPU has no native bf16 (AVX512-BF16/AMX); use fp32")
        if want == "fp16" and not on_cuda:
            raise UserError("precision: fp16 is only supported on CUDA; use bf16 or fp32")
        return want

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = self.torch.bfloat16 if self.precision == "bf16" else self.torch.float16
        return self.torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)

    # -- build -------------------------------------------------------------------------------
    def build(self) -> None:
        torch = self.torch
        from alexbench.models import create_model

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=False)
            torch.backends.cudnn.benchmark = False
        model = create_model(cfg.model, "torch", num_classes=self.num_classes, pretrained=cfg.pretrained,
                             weights=cfg.weights, input_size=self.input_size, **cfg.model_options)
        model = model.to(self.device)
        self._mem = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model = model.to(memory_format=self._mem)
        self.model = model
        self.mean = torch.tensor(self.norm.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.norm.std, device=self.device).view(1, 3, 1, 1)
        o = cfg.optimizer
        params = list(model.parameters())
        # fused: one kernel updates every weight in one pass (the same update as the loop; BENCHMARKS.md
        # "Fast paths"); None leaves torch's default (a per-parameter loop on CPU, foreach on CUDA). The CPU kernel
        # reads each gradient in its weight's memory layout, which autograd guarantees (tests/test_fused_optimizer.py)
        fused = {"fused": True} if o.fused else {}
        if o.name == "sgd":
            # coupled L2: torch adds weight_decay * w to the gradient before momentum
            self.optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum,
                                             nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay,
                                             **fused)
        elif o.name == "adam":
            self.optimizer = torch.optim.Adam(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay,
                                              **fused)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps,
                                               weight_decay=o.weight_decay, **fused)
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        train_model = model
        if self.dist.active:
            if cfg.sync_batchnorm:  # distributed.check_config refused it on gloo
                model = self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            # DDP copies rank 0's weights to every rank here; gradients are averaged in backward
            ids = [self.dist.local_rank] if self.device.startswith("cuda") else None
            train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
            # dropout masks differ between ranks (each rank draws for its own share)
            torch.manual_seed(int(np.random.SeedSequence([cfg.seed, self.dist.rank]).generate_state(1)[0]))
        self._forward, self._infer = train_model, model
        self.compiled = bool(cfg.compile and not cfg.deterministic)  # metrics.json's system.compiled
        if self.compiled:
            self._forward = torch.compile(train_model)
            self._infer = self._forward if train_model is model else torch.compile(model)

    def params(self) -> tuple[int, int]:
        from alexbench.models import count_params

        return count_params(self.model, "torch")

    def set_base_trainable(self, trainable: bool) -> None:
        from alexbench.models import head_layer_names, set_base_trainable

        set_base_trainable(self.model, "torch", trainable, head_layer_names(self.cfg.model))

    # -- steps -------------------------------------------------------------------------------
    def _prep(self, xb: np.ndarray):  # noqa: ANN202 - torch tensor
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(xb)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float()  # NHWC uint8 -> NCHW float (memory stays channels_last)
        if self.norm.bgr:
            x = x.flip(1)
        x = (x - self.mean) / self.std
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            # whole-batch bilinear resize, half-pixel centres, no antialias (== tf.image.resize bilinear)
            x = torch.nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                                                align_corners=False, antialias=False)
        return x.contiguous(memory_format=self._mem)

    def train_mode(self) -> None:
        from alexbench.models import torch_train_mode

        torch_train_mode(self.model)

    def train_step(self, xb: np.ndarray, yb: np.ndarray, lr: float) -> tuple[float, int]:
        torch = self.torch
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        x = self._prep(xb)
        y = torch.from_numpy(yb).to(self.device)
        with self._autocast():
            logits = self._forward(x)
            loss = self.loss_fn(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        correct = (logits.detach().argmax(1) == y).sum()
        if self.dist.active:  # the global batch's loss and hits, the same on every rank
            return distributed.reduce_step(loss, correct)
        return float(loss.detach()), int(correct)

    def predict(self, batches) -> tuple[np.ndarray, float]:  # noqa: ANN001
        torch = self.torch
        self.model.eval()
        out, loss_sum, n = [], 0.0, 0
        with torch.inference_mode(), self._autocast():
            for xb, yb in batches:
                x = self._prep(xb)
                logits = self._infer(x).float()
                if self.cfg.tta_flip:
                    logits = 0.5 * (logits + self._infer(x.flip(3)).float())
                y = torch.from_numpy(yb).to(self.device)
                loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
                n += len(yb)
                out.append(torch.softmax(logits, 1).cpu().numpy())
        probs = np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)
        return probs, loss_sum / max(n, 1)

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, path: str, meta: dict) -> None:
        torch = self.torch
        blob = {
            "format": "alexbench-torch-checkpoint-v1",
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "meta_json": strict_json(meta, indent=None),
        }
        if torch.cuda.is_available() and self.device.startswith("cuda"):
            blob["cuda_rng"] = torch.cuda.get_rng_state_all()
        with open(path, "wb") as fh:
            torch.save(blob, fh)

    def _read(self, path: str) -> dict:
        return read_checkpoint(path, map_location=self.device)

    def _load_model_state(self, path: str, state: dict) -> None:
        own = self.model.state_dict()
        for k, v in own.items():
            if k not in state:
                raise UserError(f"{path}: layer {k!r} missing from checkpoint (wrong architecture?)")
            if tuple(state[k].shape) != tuple(v.shape):
                raise UserError(f"{path}: layer {k!r} has shape {tuple(state[k].shape)}, "
                                f"model expects {tuple(v.shape)}")
            ckpt.check_weight_kind(path, f"layer {k!r}", state[k], v)
        extra = sorted(set(state) - set(own))
        if extra:
            raise UserError(f"{path}: layer {extra[0]!r} is not in the model (wrong architecture?)")
        self.model.load_state_dict(state, strict=True)

    def load(self, path: str) -> dict:
        torch = self.torch
        blob = self._read(path)
        meta = ckpt.resume_meta(path, blob["meta"])
        _check_resume_state(path, blob)
        self._load_model_state(path, blob["model"])
        try:
            self.optimizer.load_state_dict(self._own_step_kind(blob["optimizer"]))
            torch.set_rng_state(blob["torch_rng"].cpu())
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
            raise UserError(f"{path}: optimizer or random state does not fit this run "
                            f"({_first_line(exc)})") from None
        for p, st in self.optimizer.state.items():  # torch checks neither the slots' shapes nor dtypes
            for k, v in st.items():
                if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape:
                    raise UserError(f"{path}: optimizer state {k!r} has shape {tuple(v.shape)}, its parameter "
                                    f"{tuple(p.shape)}")
        if "cuda_rng" in blob and self.device.startswith("cuda"):
            torch.cuda.set_rng_state_all(blob["cuda_rng"])
        return meta

    def _own_step_kind(self, state: dict) -> dict:
        """The saved groups carry the writer's ``fused``/``foreach`` flags, which torch would adopt:
        this run's own choice is kept, so a checkpoint of either kind resumes with either."""
        own, saved = self.optimizer.param_groups, state["param_groups"]
        if len(own) != len(saved):  # torch refuses it with its own message
            return state
        keep = ("fused", "foreach")
        return dict(state, param_groups=[{**g, **{k: o[k] for k in keep if k in o}} for g, o in zip(saved, own)])

    def load_weights_only(self, path: str, blob: dict | None = None) -> dict:
        """Load the model weights only; ``blob`` is the file's content if :func:`read_checkpoint` read it already."""
        blob = self._read(path) if blob is None else blob
        self._load_model_state(path, blob["model"])
        return blob["meta"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _check_tensors(path: str, prefix: str, tensors: dict) -> None:
    torch = import_torch()
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise UserError(f"{path}: {prefix}{name}: expected a tensor (got {type(t).__name__})")
        ckpt.check_weight(path, f"{prefix}{name}", t)


def _check_resume_state(path: str, blob: dict) -> None:
    """The optimizer's and the random generator's state, which only a resume uses."""
    torch = import_torch()
    opt, rng = blob.get("optimizer"), blob.get("torch_rng")
    if not (isinstance(opt, dict) and isinstance(opt.get("state"), dict) and isinstance(opt.get("param_groups"), list)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in opt["param_groups"])
            and all(isinstance(st, dict) for st in opt["state"].values())):
        raise UserError(f"{path}: optimizer: missing, or not torch's state and param_groups; cannot resume from it")
    for pid, st in opt["state"].items():
        _check_tensors(path, f"optimizer.state.{pid}.", {k: v for k, v in st.items() if isinstance(v, torch.Tensor)})
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.dim() != 1:
        raise UserError(f"{path}: torch_rng: missing or not a 1-D uint8 tensor; cannot resume from it")


def read_checkpoint(path: str, map_location: str = "cpu") -> dict:
    """Read an alexbench torch checkpoint with ``weights_only=True``: a payload is refused, never run.

    The model's tensors (finite floats or integer counters) and the metadata (parsed into
    ``blob["meta"]``) are checked here; the optimizer's and random state when a resume loads
    them. A file that fails is refused in one line naming the part.
    """
    ckpt.check_expansion(path)  # before importing torch: a bomb costs nothing
    torch = import_torch()
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # noqa: BLE001 - unpickling refused (payload) or corrupt file
        raise UserError(f"{path}: not a loadable alexbench checkpoint ({_first_line(exc)})") from None
    if not isinstance(blob, dict) or blob.get("format") != "alexbench-torch-checkpoint-v1":
        raise UserError(f"{path}: not an alexbench torch checkpoint")
    for key, kind, what in (("model", dict, "a mapping of layer names to tensors"), ("meta_json", str, "JSON text")):
        if not isinstance(blob.get(key), kind):
            raise UserError(f"{path}: {key}: missing or not {what} (a damaged or hand-made checkpoint)")
    _check_tensors(path, "model.", blob["model"])
    blob["meta"] = ckpt.parse_meta(path, blob["meta_json"])
    return blob
