"""The paper's Figure 2 in one dimension: fit one Gaussian to a mixture of Gaussians by forward KL and
by reverse KL.

Both divergences are computed by quadrature on a fine grid (no sampling noise), and the Gaussian's
mean and log standard deviation are fitted with Adam. Forward KL (mass-covering) should land on the
mixture's moments, between the modes; reverse KL (mode-seeking) should settle on one mode.
"""

from __future__ import annotations

import math

import torch


def mixture_logpdf(x: torch.Tensor, weights, means, stds) -> torch.Tensor:
    w = torch.tensor(weights, dtype=torch.float64)
    m = torch.tensor(means, dtype=torch.float64)
    s = torch.tensor(stds, dtype=torch.float64)
    comp = -0.5 * ((x[:, None] - m) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)
    return torch.logsumexp(comp + torch.log(w / w.sum()), dim=1)


def gaussian_logpdf(x: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)


def kl(log_a: torch.Tensor, log_b: torch.Tensor, dx: float) -> torch.Tensor:
    """KL(a‖b) = ∫ a (log a − log b) dx on the grid."""
    return (log_a.exp() * (log_a - log_b)).sum() * dx


def fit(direction: str, grid, log_p, dx, *, init_mu, init_log_sigma, steps, lr):
    mu = torch.tensor(float(init_mu), dtype=torch.float64, requires_grad=True)
    log_sigma = torch.tensor(float(init_log_sigma), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([mu, log_sigma], lr=lr)
    for _ in range(steps):
        log_q = gaussian_logpdf(grid, mu, log_sigma)
        loss = kl(log_p, log_q, dx) if direction == "forward" else kl(log_q, log_p, dx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        log_q = gaussian_logpdf(grid, mu, log_sigma)
        return {
            "mu": float(mu),
            "sigma": float(log_sigma.exp()),
            "forward_kl": float(kl(log_p, log_q, dx)),
            "reverse_kl": float(kl(log_q, log_p, dx)),
            "log_q": log_q,
        }


def run_gmm(cfg: dict) -> tuple[dict, dict]:
    """Fit both directions; returns (results, curves for the plot)."""
    lo, hi = cfg.get("grid", (-10.0, 10.0))
    grid = torch.linspace(lo, hi, int(cfg.get("points", 4001)), dtype=torch.float64)
    dx = float(grid[1] - grid[0])
    weights, means, stds = cfg["weights"], cfg["means"], cfg["stds"]
    log_p = mixture_logpdf(grid, weights, means, stds)
    w = torch.tensor(weights, dtype=torch.float64) / sum(weights)
    m, s = torch.tensor(means, dtype=torch.float64), torch.tensor(stds, dtype=torch.float64)
    mean = float((w * m).sum())
    var = float((w * (s**2 + m**2)).sum() - mean**2)
    results = {"target": {"weights": list(weights), "means": list(means), "stds": list(stds)}}
    results["moments"] = {"mu": mean, "sigma": math.sqrt(var)}
    curves = {"x": grid, "target": log_p.exp()}
    for direction in ("forward", "reverse"):
        out = fit(
            direction,
            grid,
            log_p,
            dx,
            init_mu=cfg.get("init_mu", 0.5),
            init_log_sigma=math.log(cfg.get("init_sigma", 3.0)),
            steps=int(cfg.get("steps", 2000)),
            lr=float(cfg.get("lr", 0.05)),
        )
        curves[direction] = out.pop("log_q").exp()
        results[f"{direction}_fit"] = out
    return results, curves


def plot_gmm(curves: dict, results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    x = curves["x"].numpy()
    ax.fill_between(x, curves["target"].numpy(), color="0.8", label="target p (mixture)")
    f, r = results["forward_fit"], results["reverse_fit"]
    ax.plot(x, curves["forward"].numpy(), label=f"forward KL(p‖q): μ={f['mu']:.2f}, σ={f['sigma']:.2f}")
    ax.plot(x, curves["reverse"].numpy(), label=f"reverse KL(q‖p): μ={r['mu']:.2f}, σ={r['sigma']:.2f}")
    ax.set_xlim(min(results["target"]["means"]) - 4, max(results["target"]["means"]) + 4)
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.set_title("One Gaussian fitted to a mixture (paper Fig. 2)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
