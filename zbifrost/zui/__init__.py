"""The zUI engine: zUI files loaded and checked (`loader`, `model`), a workspace of them kept
current (`workspace`), and what a command runs (`actions`, `arguments`, `forms`, `plugins`)."""
