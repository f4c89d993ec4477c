"""minillm: config-driven distillation of causal LMs with MiniLLM (reverse-KL on-policy) and its baselines."""

__version__ = "0.1.0"


def _register_resolvers() -> None:
    """``${minillm.root:}``: the checkout's folder (where ``conf/`` and ``assets/`` are), so that the embedded
    default is found from any working directory (console scripts, ``cd`` elsewhere)."""
    from pathlib import Path

    try:
        from omegaconf import OmegaConf
    except ImportError:  # the package imported without its dependencies (packaging tools)
        return
    if not OmegaConf.has_resolver("minillm.root"):
        root = str(Path(__file__).resolve().parent.parent)
        OmegaConf.register_new_resolver("minillm.root", lambda: root)


_register_resolvers()


def _register_schemas() -> None:
    """The typed config nodes (minillm/schema/) in Hydra's ConfigStore, before any config is composed."""
    try:
        from minillm.schema import register
    except ImportError:  # the package imported without its dependencies (packaging tools)
        return
    try:
        register()
    except ImportError:
        return


_register_schemas()
