"""Stage 1 of the data flow: the four MNIST IDX files -> TFRecords.

`idx` reads and validates IDX files, `download` fetches them from public mirrors,
`convert_to_records` writes TensorFlow's classic MNIST TFRecord schema.
"""
