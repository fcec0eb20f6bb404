"""The thin CLI layer: Typer modules that parse options, call one library function, render."""
