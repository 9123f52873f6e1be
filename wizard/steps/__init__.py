"""One module per wizard page; ``base.Step`` is the contract they share."""
