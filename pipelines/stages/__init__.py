"""Pure stage functions: frames in, frames out, no I/O and no Prefect."""
