"""Stage 1 of the data flow: the four MNIST IDX files -> TFRecords.

`idx` reads and validates IDX files, `download` fetches them from public
mirrors, `records` names the TFRecord files and their schema, and
`convert_to_records` writes them (also the `vae-convert-mnist` command).
"""
