"""Figures of the reproduction report, as PNGs.

Pillow draws what needs no plotting library (the learned 2-d manifold, the
posterior means coloured by digit); the training curves use matplotlib when it
is installed (`pip install -e '.[plots]'`) and are skipped otherwise.
"""

import io
import statistics

import numpy as np
from PIL import Image
from PIL import ImageDraw

from mnist_vae import files
from mnist_vae import images

# Ten distinguishable colours, one per digit (Tableau 10).
DIGIT_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                 (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def manifold_latents(grid_size=20):
  """z of a grid_size x grid_size manifold figure: float32 [grid_size**2, 2].

  As in Kingma & Welling (2014), Figure 4: the unit square mapped through the
  inverse CDF of the Gaussian, so the grid covers the prior evenly.
  """
  normal = statistics.NormalDist()
  # Row 0 at the top is the largest z_2, as on a plot.
  coordinates = [normal.inv_cdf((i + 0.5) / grid_size) for i in range(grid_size)]
  return np.array([(z1, z2) for z2 in reversed(coordinates) for z1 in coordinates], np.float32)


def manifold_grid(decoded, grid_size=20):
  """Decoder means for `manifold_latents` -> one uint8 grid, no padding."""
  return images.tile(images.to_uint8(decoded), grid_size, pad=0)


def posterior_scatter(means, labels, size=600, radius=1, class_names=None):
  """The 2-d posterior means of a test set, coloured by class: RGB uint8 image.

  Args:
    means: float [n, 2].
    labels: int [n] in 0..9.
    class_names: the legend's 10 names; None: the digits.
  """
  image = Image.new('RGB', (size, size), (255, 255, 255))
  draw = ImageDraw.Draw(image)
  # Same scale on both axes, centred on the data.
  low, high = means.min(axis=0), means.max(axis=0)
  span = max(float((high - low).max()), 1e-6) * 1.1
  pixels = ((means - (low + high) / 2) / span + 0.5) * (size - 1)
  for (x, y), label in zip(pixels, labels):
    y = size - 1 - y
    draw.ellipse([x - radius, y - radius, x + radius, y + radius],
                 fill=DIGIT_COLOURS[int(label) % 10])
  for label, colour in enumerate(DIGIT_COLOURS):  # Legend.
    draw.rectangle([8, 8 + 14 * label, 18, 18 + 14 * label], fill=colour)
    draw.text((22, 7 + 14 * label),
              class_names[label] if class_names else str(label),
              fill=(0, 0, 0))
  return np.asarray(image)


def training_curves(path, curves, title, xlabel='step'):
  """Plots {label: (steps, values)} into a PNG; False when matplotlib is absent."""
  try:
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
  except ImportError:
    return False
  figure, axes = pyplot.subplots(figsize=(7, 4.5), dpi=100)
  for label, (steps, values) in curves.items():
    axes.plot(steps, values, label=label, linewidth=1)
  axes.set_xlabel(xlabel)
  axes.set_ylabel('negative ELBO (nats)')
  axes.set_title(title)
  values = np.concatenate([np.asarray(v, float) for _, v in curves.values()])
  if values.size:
    axes.set_ylim(np.percentile(values, 1) - 5, np.percentile(values, 90) + 10)
  axes.grid(alpha=0.3)
  axes.legend()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', bbox_inches='tight')
  pyplot.close(figure)
  files.write(path, buffer.getvalue())
  return True
