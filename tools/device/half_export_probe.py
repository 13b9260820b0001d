"""GPU host: the FP16 forms (torchscript, compiled) of a model that returns a dict, with the default
``HalfPrecision`` and with a ``half_module`` that reaches into the module's own layers (as the
detection example's does), each exported by ``trtis.export`` and checked there."""
from __future__ import annotations

import torch

from trtis import export, verify


class Heads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.network = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(8, 4)

    def forward(self, image):
        features = self.network(image)
        return {"scores": self.head(features), "features": features}


def network_only(module: Heads) -> Heads:
    """Half precision for the network alone: needs the caller's module, not the export's wrapper."""
    module.network.half()
    return HalfInput(module)


class HalfInput(torch.nn.Module):
    def __init__(self, module: Heads):
        super().__init__()
        self.module = module

    def forward(self, image):
        features = self.module.network(image.half()).float()
        return {"scores": self.module.head(features), "features": features}


if __name__ == "__main__":
    example = [torch.randn(2, 3, 16, 16)]
    for fmt in ("torchscript", "compiled"):
        for label, options in (("HalfPrecision", {}), ("half_module reaching into the module", {"half_module": network_only})):
            exported = export.export(Heads().eval(), example, ["image"], ["scores", "features"], fmt,
                                     name=f"heads-{fmt}", max_batch_size=4, **options)
            print(f"{fmt} FP16 ({label}) on {torch.cuda.get_device_name()}: {exported.kind}, "
                  f"{len(exported.comparisons)} comparisons")
            print(verify.table(exported.comparisons))
