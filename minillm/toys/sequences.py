"""The mechanism behind Table 1, computed exactly on sequences small enough to enumerate.

Teacher p: a mixture of Markov chains over a small vocabulary, fixed length L (every one of the V^L
sequences is enumerated). Student q: ONE Markov chain (initial distribution + transition matrix) — it
cannot represent the mixture, so it must choose between covering both modes (and producing hybrids the
teacher never produces) and seeking one.

The student is trained four ways, each from the same initialisation:
- ``forward_kld``: word-level KD, Σ_x p(x) Σ_t KL(p(·|x<t) ‖ q(·|x<t)), exact;
- ``seqkd``: maximum likelihood on a fixed set of sequences sampled from the teacher;
- ``minillm``: the project's MiniLLM estimator (``objectives.policy_gradient.minillm_loss``, preset
  ``variant``) on sampled rollouts from the teacher-mixed policy (``alpha``) — the very function the LLM
  training uses; ``minillm_no_mix``: the same with α = 0 (rollouts from the student alone);
- ``reverse_kld_exact``: the exact gradient of KL(q‖p) by enumeration, the target minillm estimates.

Reported from enumeration: exact forward and reverse KL, the student's mass on sequences the teacher
(almost) never produces (p(x) < ``never_threshold``), and the exposure-bias curve ExAccErr(l) with the
per-step error ε = KL(p(·|prefix) ‖ q(·|prefix)) on student versus teacher prefixes (as
``minillm.evaluation.exposure``).
"""

from __future__ import annotations

import itertools
import math

import torch

from minillm.errors import MinillmError
from minillm.objectives.policy_gradient import PGOptions, minillm_loss

DT = torch.float64


def make_teacher(vocab: int, n_chains: int, main: float, floor: float, seed: int):
    """Chain k walks the vocabulary with its own stride: token v goes to (v + stride_k) mod V with
    probability ``main``, to (v + 2·stride_k) mod V with the rest (a second valid continuation), and
    to anything else with ``floor``. Chains start at different tokens. Returns (π, init, trans)."""
    strides = [1, -1, 2, -2][:n_chains]
    init = torch.full((n_chains, vocab), floor, dtype=DT)
    trans = torch.full((n_chains, vocab, vocab), floor, dtype=DT)
    for k, stride in enumerate(strides):
        init[k, (k * (vocab // max(n_chains, 1))) % vocab] = 1.0
        for v in range(vocab):
            trans[k, v, (v + stride) % vocab] += main
            trans[k, v, (v + 2 * stride) % vocab] += 1.0 - main
    init = init / init.sum(-1, keepdim=True)
    trans = trans / trans.sum(-1, keepdim=True)
    pi = torch.full((n_chains,), 1.0 / n_chains, dtype=DT)
    return pi, init, trans


def all_sequences(vocab: int, length: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(vocab), repeat=length)), dtype=torch.long)


def teacher_conditionals(seqs: torch.Tensor, pi, init, trans) -> torch.Tensor:
    """log p(v | x<t) for every sequence and position: (N, L, V), via the posterior over chains."""
    n, length = seqs.shape
    log_w = torch.log(pi).expand(n, -1).clone()  # (N, K) log posterior weight before position t
    out = []
    for t in range(length):
        post = torch.softmax(log_w, dim=-1)  # (N, K)
        if t == 0:
            comp = init.unsqueeze(0).expand(n, -1, -1)  # (N, K, V)
        else:
            comp = trans[:, seqs[:, t - 1], :].permute(1, 0, 2)  # (N, K, V)
        out.append(torch.log((post.unsqueeze(-1) * comp).sum(1)))
        log_w = log_w + torch.log(
            comp.gather(2, seqs[:, t].view(n, 1, 1).expand(-1, comp.shape[1], 1))
        ).squeeze(-1)
    return torch.stack(out, dim=1)


class ChainStudent(torch.nn.Module):
    """One Markov chain: logits of the first token and of each transition."""

    def __init__(self, vocab: int, seed: int, scale: float = 0.1):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.init = torch.nn.Parameter(scale * torch.randn(vocab, generator=g, dtype=DT))
        self.trans = torch.nn.Parameter(scale * torch.randn(vocab, vocab, generator=g, dtype=DT))

    def logits(self, seqs: torch.Tensor) -> torch.Tensor:
        """Logits of the next token at every position: (N, L, V)."""
        n, length = seqs.shape
        first = self.init.expand(n, 1, -1)
        rest = self.trans[seqs[:, : length - 1]]
        return torch.cat([first, rest], dim=1)


def seq_logprob(log_cond: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    return log_cond.gather(2, seqs.unsqueeze(-1)).squeeze(-1).sum(-1)


def sample(log_cond_fn, n: int, length: int, generator) -> torch.Tensor:
    """Sample n sequences token by token; ``log_cond_fn(prefix)`` gives (n, V) log-probs."""
    seqs = torch.zeros((n, length), dtype=torch.long)
    for t in range(length):
        probs = log_cond_fn(seqs, t).exp()
        seqs[:, t] = torch.multinomial(probs.float(), 1, generator=generator).squeeze(-1)
    return seqs


class Toy:
    """The enumerated world: every sequence, its teacher log-prob and teacher conditionals."""

    def __init__(self, vocab, length, n_chains, main, floor, seed):
        self.vocab, self.length = vocab, length
        self.pi, self.init, self.trans = make_teacher(vocab, n_chains, main, floor, seed)
        self.seqs = all_sequences(vocab, length)
        self.t_cond = teacher_conditionals(self.seqs, self.pi, self.init, self.trans)  # (N, L, V)
        self.log_p = seq_logprob(self.t_cond, self.seqs)
        self.index = {tuple(s.tolist()): i for i, s in enumerate(self.seqs)}

    def teacher_cond_of(self, seqs: torch.Tensor) -> torch.Tensor:
        """Teacher conditionals for arbitrary full-length sequences (looked up in the enumeration)."""
        idx = torch.tensor([self.index[tuple(s.tolist())] for s in seqs])
        return self.t_cond[idx]

    def teacher_prefix_cond(self, prefix: torch.Tensor, t: int) -> torch.Tensor:
        """log p(v | prefix[:, :t]) for partial sequences (the prefix padded with zeros)."""
        return teacher_conditionals(prefix, self.pi, self.init, self.trans)[:, t]

    def metrics(self, student: ChainStudent, never_threshold: float) -> dict:
        with torch.no_grad():
            s_cond = torch.log_softmax(student.logits(self.seqs), dim=-1)
            log_q = seq_logprob(s_cond, self.seqs)
            p, q = self.log_p.exp(), log_q.exp()
            never = p < never_threshold
            # per-step error on a prefix: KL(p(·|prefix) ‖ q(·|prefix)); prefix weights from p or q
            step_kl = (self.t_cond.exp() * (self.t_cond - s_cond)).sum(-1)  # (N, L)
            # weight of the prefix x<t = marginal prob of x<t; with full sequences enumerated, averaging
            # over sequences with weight p(x) gives E_{x<t~p} (the suffix sums out)
            e_teacher = (p.unsqueeze(1) * step_kl).sum(0)
            e_student = (q.unsqueeze(1) * step_kl).sum(0)
            r, e = e_student.cumsum(0), e_teacher.cumsum(0)
            exaccerr = ((r - e) / e.clamp(min=1e-12) * 100).tolist()
            return {
                "forward_kl": float((p * (self.log_p - log_q)).sum()),
                "reverse_kl": float((q * (log_q - self.log_p)).sum()),
                "mass_on_never": float(q[never].sum()),
                "teacher_mass_on_never": float(p[never].sum()),
                "n_never": int(never.sum()),
                "student_entropy": float(-(q * log_q).sum()),
                "exaccerr": exaccerr,
                "exaccerr_at_L": exaccerr[-1],
                "top_sequence_mass": float(q.max()),
            }


def train_student(toy: Toy, method: str, cfg: dict, seed: int) -> ChainStudent:
    student = ChainStudent(toy.vocab, seed)
    opt = torch.optim.Adam(student.parameters(), lr=float(cfg["lr"]))
    g = torch.Generator().manual_seed(seed + 1000)
    batch = int(cfg["batch_size"])
    p = toy.log_p.exp()
    seqkd_data = None
    if method == "seqkd":
        seqkd_data = sample(
            lambda prefix, t: toy.teacher_prefix_cond(prefix, t), int(cfg["seqkd_samples"]), toy.length, g
        )
    alpha = float(cfg.get("alpha", 0.2))
    variant = cfg.get("variant", "code")
    options = PGOptions.code() if variant == "code" else PGOptions.paper(single_step=True)
    for _ in range(int(cfg["steps"])):
        if method == "forward_kld":
            s_cond = torch.log_softmax(student.logits(toy.seqs), dim=-1)
            step_kl = (toy.t_cond.exp() * (toy.t_cond - s_cond)).sum(-1).sum(-1)
            loss = (p * step_kl).sum()
        elif method == "reverse_kld_exact":
            log_q = seq_logprob(torch.log_softmax(student.logits(toy.seqs), dim=-1), toy.seqs)
            loss = (log_q.exp() * (log_q - toy.log_p)).sum()
        elif method == "seqkd":
            idx = torch.randint(len(seqkd_data), (batch,), generator=g)
            x = seqkd_data[idx]
            loss = -seq_logprob(torch.log_softmax(student.logits(x), dim=-1), x).mean()
        elif method in ("minillm", "minillm_no_mix"):
            loss = _minillm_step(toy, student, batch, alpha if method == "minillm" else 0.0, options, g)
        else:
            raise ValueError(f"unknown method {method!r}")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return student


def _minillm_step(toy, student, batch, alpha, options, g) -> torch.Tensor:
    """One MiniLLM update: rollouts from α·p + (1−α)·q, then the project's minillm_loss."""
    with torch.no_grad():

        def mix(prefix, t):
            s = torch.log_softmax(student.logits(prefix)[:, t], dim=-1)
            te = toy.teacher_prefix_cond(prefix, t)
            return torch.logaddexp(te + math.log(alpha), s + math.log1p(-alpha)) if alpha > 0 else s

        x = sample(mix, batch, toy.length, g)
        t_cond = toy.teacher_cond_of(x)
        s_old = torch.log_softmax(student.logits(x), dim=-1)
        mix_cond = (
            torch.logaddexp(t_cond + math.log(alpha), s_old + math.log1p(-alpha)) if alpha > 0 else s_old
        )
        pick = x.unsqueeze(-1)
        old_lp = s_old.gather(2, pick).squeeze(-1)
        teacher_lp = t_cond.gather(2, pick).squeeze(-1)
        mix_lp = mix_cond.gather(2, pick).squeeze(-1)
    logits = student.logits(x)
    logprobs = torch.log_softmax(logits, dim=-1).gather(2, pick).squeeze(-1)
    mask = torch.ones_like(old_lp)
    loss, _ = minillm_loss(logits, t_cond, logprobs, old_lp, teacher_lp, mix_lp, mask, options)
    return loss


METHODS = ("forward_kld", "seqkd", "minillm", "minillm_no_mix", "reverse_kld_exact")


def run_sequences(cfg: dict) -> dict:
    toy = Toy(cfg["vocab"], cfg["length"], cfg["n_chains"], cfg["main"], cfg["floor"], cfg.get("seed", 0))
    out = {"world": {"sequences": len(toy.seqs), **{k: cfg[k] for k in ("vocab", "length", "n_chains")}}}
    unknown = [m for m in cfg.get("methods", METHODS) if m not in METHODS]
    if unknown:
        raise MinillmError(f"toy.methods: unknown {unknown}; choose from {list(METHODS)}")
    init = ChainStudent(toy.vocab, cfg.get("seed", 0))
    out["init"] = toy.metrics(init, cfg["never_threshold"])
    for method in cfg.get("methods", METHODS):
        runs = [
            toy.metrics(train_student(toy, method, cfg, seed), cfg["never_threshold"])
            for seed in cfg.get("seeds", [0])
        ]
        out[method] = {"runs": runs}
        for key in ("forward_kl", "reverse_kl", "mass_on_never", "exaccerr_at_L", "student_entropy"):
            vals = [r[key] for r in runs]
            mean = sum(vals) / len(vals)
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / max(1, len(vals) - 1))
            out[method][key] = mean
            out[method][f"{key}_std"] = std
    return out


def plot_sequences(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if m in results]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, title in (
        (axes[0], "reverse_kl", "exact reverse KL(q‖p)"),
        (axes[1], "mass_on_never", "student mass on sequences p never makes"),
    ):
        vals = [results[m][key] for m in methods]
        errs = [results[m][f"{key}_std"] for m in methods]
        ax.bar(range(len(methods)), vals, yerr=errs, color=[f"C{i}" for i in range(len(methods))])
        ax.set_xticks(range(len(methods)), methods, rotation=20, fontsize=8)
        ax.set_title(title, fontsize=9)
    for i, m in enumerate(methods):
        curves = [r["exaccerr"] for r in results[m]["runs"]]
        mean = [sum(c[t] for c in curves) / len(curves) for t in range(len(curves[0]))]
        axes[2].plot(range(1, len(mean) + 1), mean, marker="o", color=f"C{i}", label=m)
    axes[2].set_xlabel("step l")
    axes[2].set_ylabel("ExAccErr(l) %")
    axes[2].set_title("exposure bias (exact)", fontsize=9)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
