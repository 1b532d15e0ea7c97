"""Operations outside the asset graph: the CLI, metrics, retention."""
