"""The plain loops users write, measured as they are written.

:class:`PlainTorchLoop` follows ``../shared/seeds/002_*.txt`` line for line: a
``Dataset`` that turns each stored uint8 image into a PIL image (exactly what
``torchvision.datasets.CIFAR10.__getitem__`` does), ``transforms.Compose([Resize(224),
ToTensor(), Normalize(0.5, 0.5)])`` per image in a ``DataLoader(batch_size=64,
shuffle=True, num_workers=2)``, ``torchvision.models.alexnet(num_classes=10)`` in fp32,
``CrossEntropyLoss`` and ``SGD(lr=0.001, momentum=0.9)``. Nothing from alexbench runs in
that process: thread counts are PyTorch's defaults.

:class:`PlainKerasFit` is plain ``model.compile`` / ``model.fit`` on numpy float32
arrays, in the float32 policy, with ``SGD(0.001, momentum=0.9)``, one-hot labels and
categorical cross-entropy as the seed writes it. The images are resized to 224 px once,
ahead of time, with ``tf.image.resize``, so the baseline pays nothing for resizing.
The model is alexbench's own Keras ``alexnet`` (the same network the engine trains);
importing it sets alexbench's thread counts, so both sides run with the same threads.
``jit_compile`` is left at Keras's default ("auto", which is off on a CPU-only machine).
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.arrays import load_arrays
from benchmarks.process import max_rss_bytes


class PlainTorchLoop:
    """The seed's PyTorch loop (see the module docstring)."""

    def __init__(self, spec: dict) -> None:
        import torch
        import torchvision
        import torchvision.transforms as transforms
        from PIL import Image

        arrays = load_arrays(spec["data_dir"])
        x, y = arrays["x_train"], arrays["y_train"]
        self.batch_size = int(spec.get("batch_size", 64))
        self.num_workers = int(spec.get("num_workers", 2))

        class CifarLike(torch.utils.data.Dataset):
            """Indexing works as torchvision.datasets.CIFAR10 does: uint8 HWC -> PIL -> transform."""

            def __init__(self, data, targets, transform) -> None:  # noqa: ANN001
                self.data, self.targets, self.transform = data, targets, transform

            def __len__(self) -> int:
                return len(self.targets)

            def __getitem__(self, index: int):  # noqa: ANN204
                img, target = self.data[index], int(self.targets[index])
                img = Image.fromarray(np.asarray(img))
                return self.transform(img), target

        transform = transforms.Compose([
            transforms.Resize(224),  # AlexNet expects 224x224 images
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ])
        self.torch = torch
        self.trainset = CifarLike(x, y, transform)
        self.loader = torch.utils.data.DataLoader(self.trainset, batch_size=self.batch_size, shuffle=True,
                                                  num_workers=self.num_workers)
        torch.manual_seed(0)
        self.model = torchvision.models.alexnet(num_classes=10)
        self.criterion = torch.nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.001, momentum=0.9)
        self.threads = torch.get_num_threads()

    def op_train(self, steps: int, warmup: int, **_: object) -> dict:
        """A fresh DataLoader iterator (workers start in the warm-up), ``warmup`` untimed steps, then timed ones."""
        model, criterion, optimizer = self.model, self.criterion, self.optimizer
        model.train()
        it = iter(self.loader)
        running_loss = 0.0
        t_start = None
        t_first = time.perf_counter()
        first_step = None
        try:
            for i in range(warmup + steps):
                if i == warmup:
                    t_start = time.perf_counter()
                inputs, labels = next(it)
                optimizer.zero_grad()
                outputs = model(inputs)
                labels = labels.long()
                loss = criterion(outputs, labels)
                loss.backward()
                optimizer.step()
                running_loss += loss.item()
                if i == 0:
                    first_step = time.perf_counter() - t_first
            t_end = time.perf_counter()
        finally:
            del it  # shuts the DataLoader workers down
        assert t_start is not None  # steps >= 1
        sec = t_end - t_start
        return {"images": steps * self.batch_size, "seconds": sec, "ips": steps * self.batch_size / sec,
                "first_step_seconds": first_step, "num_workers": self.num_workers, "threads": self.threads,
                "loss": running_loss / max(1, warmup + steps), "max_rss_bytes": max_rss_bytes()}


class PlainKerasFit:
    """Plain ``model.fit`` on pre-resized float32 numpy arrays (see the module docstring)."""

    def __init__(self, spec: dict) -> None:
        from alexbench.frameworks import import_keras

        keras = import_keras()
        import tensorflow as tf

        from alexbench.models import create_model

        self.keras = keras
        self.batch_size = int(spec.get("batch_size", 64))
        n = self.batch_size * int(spec["batches"])
        arrays = load_arrays(spec["data_dir"])
        x_u8, y = np.asarray(arrays["x_train"][:n]), np.asarray(arrays["y_train"][:n])
        # resized once, up front, in chunks (so the baseline pays nothing for resizing)
        chunks = [tf.image.resize(x_u8[i:i + 256].astype("float32") / 255.0, (224, 224)).numpy()
                  for i in range(0, n, 256)]
        self.x = np.concatenate(chunks).astype("float32")
        self.y = keras.utils.to_categorical(y, 10)
        keras.mixed_precision.set_global_policy("float32")
        keras.utils.set_random_seed(0)
        self.model = create_model("alexnet", "keras", num_classes=10)
        self.model.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                           optimizer=keras.optimizers.SGD(learning_rate=0.001, momentum=0.9),
                           metrics=["accuracy"])
        self.jit_compile = bool(self.model.jit_compile)

    def op_train(self, steps: int, warmup: int, **_: object) -> dict:
        """One ``fit`` epoch over ``warmup + steps`` batches; steady state is timed from batch-end callbacks."""
        keras = self.keras
        ends: list[float] = []

        class Clock(keras.callbacks.Callback):  # type: ignore[name-defined]
            def on_train_batch_end(self, batch, logs=None) -> None:  # noqa: ANN001
                ends.append(time.perf_counter())

        n = self.batch_size * (warmup + steps)
        t0 = time.perf_counter()
        hist = self.model.fit(self.x[:n], self.y[:n], batch_size=self.batch_size, epochs=1, shuffle=True,
                              verbose=0, callbacks=[Clock()])
        if warmup == 0:
            sec = ends[-1] - t0
        else:
            sec = ends[-1] - ends[warmup - 1]
        return {"images": steps * self.batch_size, "seconds": sec, "ips": steps * self.batch_size / sec,
                "first_step_seconds": ends[0] - t0, "jit_compile": self.jit_compile,
                "loss": float(hist.history["loss"][-1]), "max_rss_bytes": max_rss_bytes()}
