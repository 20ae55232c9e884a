"""Regenerates training/tests/fixtures/adamw_pytorch.json: a few steps of torch.optim.AdamW with two
parameter groups (weight decay on the projection, none on the norm and the embeddings), a changing
learning rate and a step in which one parameter has no gradient. The Rust test
(training/tests/integration/pytorch_adamw.rs) replays the same gradients through herd's AdamW.

Run: /work/.venv-ref/bin/python dev/adamw_fixture.py   (torch 2.15, CPU, float32)
"""

import json
import pathlib

import torch

OUTPUT = pathlib.Path(__file__).resolve().parent.parent / "training/tests/fixtures/adamw_pytorch.json"
BETAS = (0.9, 0.95)
EPSILON = 1e-8
WEIGHT_DECAY = 0.1
LEARNING_RATES = [1e-2, 2e-2, 3e-2, 2e-2, 1e-2, 5e-3]
SHAPES = {
    "model.layers.0.mlp.up_proj.weight": (4, 3),
    "model.norm.weight": (3,),
    "model.embed_tokens.weight": (5, 3),
}
DECAYS = {"model.layers.0.mlp.up_proj.weight": True, "model.norm.weight": False, "model.embed_tokens.weight": False}
# At step index 2 the embeddings get no gradient (no token of theirs in the batch): PyTorch skips
# them entirely, decay and step count included.
NO_GRADIENT = {(2, "model.embed_tokens.weight")}


def main() -> None:
    torch.manual_seed(0)
    parameters = {name: torch.nn.Parameter(torch.randn(shape)) for name, shape in SHAPES.items()}
    initial = {name: parameter.detach().clone() for name, parameter in parameters.items()}
    groups = [
        {"params": [p for n, p in parameters.items() if DECAYS[n]], "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in parameters.items() if not DECAYS[n]], "weight_decay": 0.0},
    ]
    # foreach=False: the single-tensor path whose order of operations herd follows.
    optimizer = torch.optim.AdamW(groups, lr=LEARNING_RATES[0], betas=BETAS, eps=EPSILON, foreach=False)
    steps = []
    for index, learning_rate in enumerate(LEARNING_RATES):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        gradients = {}
        for name, parameter in parameters.items():
            if (index, name) in NO_GRADIENT:
                parameter.grad = None
                gradients[name] = None
            else:
                parameter.grad = torch.randn(parameter.shape)
                gradients[name] = parameter.grad.flatten().tolist()
        optimizer.step()
        steps.append(
            {
                "learning_rate": learning_rate,
                "gradients": gradients,
                "parameters_after": {n: p.detach().flatten().tolist() for n, p in parameters.items()},
            }
        )
    fixture = {
        "generator": "dev/adamw_fixture.py",
        "torch_version": torch.__version__,
        "beta1": BETAS[0],
        "beta2": BETAS[1],
        "epsilon": EPSILON,
        "weight_decay": WEIGHT_DECAY,
        "decays": DECAYS,
        "shapes": {name: list(shape) for name, shape in SHAPES.items()},
        "initial": {name: tensor.flatten().tolist() for name, tensor in initial.items()},
        "steps": steps,
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
