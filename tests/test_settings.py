"""One way from flags to settings: every entry point's flags fill its
settings types, and a flag renamed on one side only is an error at start."""

from absl import flags
import pytest

from mnist_vae import evaluate
from mnist_vae import export
from mnist_vae import generate
from mnist_vae import sample_quality
from mnist_vae import settings
from mnist_vae import train
from mnist_vae import training
from mnist_vae.data_prep import convert_to_records

# Each entry point: its flag definitions, settings types and other flags, as
# it hands them to cli.run.
ENTRY_POINTS = {
    'train': (train.define_flags, train.SETTINGS_TYPES, train.OTHER_FLAGS),
    'evaluate': (evaluate.define_flags, evaluate.SETTINGS_TYPES, {}),
    'export': (export.define_flags, (export.ExportSettings,), {}),
    'generate': (generate.define_flags, (generate.GenerateSettings,), {}),
    'sample_quality': (sample_quality.define_flags, (sample_quality.SampleQualitySettings,), {}),
    'convert_to_records':
        (convert_to_records.define_flags, (convert_to_records.ConversionSettings,), {}),
}


def _defined(define_flags):
  flag_values = flags.FlagValues()
  define_flags(flag_values)
  return flag_values


@pytest.mark.parametrize('name', sorted(ENTRY_POINTS))
def test_every_flag_fills_a_field_and_every_field_has_a_flag(name):
  define_flags, settings_types, other_flags = ENTRY_POINTS[name]
  flag_values = _defined(define_flags)
  settings.check(name, set(flag_values), settings_types, other_flags)
  # Each flag's default is its field's.
  for settings_type in settings_types:
    for field, value in settings_type._field_defaults.items():
      assert flag_values[field].default == value, (name, field)


def test_a_flag_renamed_on_one_side_is_named_at_start():
  flag_values = _defined(train.define_flags)
  delattr(flag_values, 'batch_size')
  flags.DEFINE_integer('batchsize', 128, 'renamed', flag_values=flag_values)
  with pytest.raises(settings.SettingsError) as raised:
    settings.check('train', set(flag_values), train.SETTINGS_TYPES, train.OTHER_FLAGS)
  assert 'fields with no flag: batch_size' in str(raised.value)
  assert 'flags that fill no settings: --batchsize' in str(raised.value)


def test_fill_takes_each_field_from_its_flag():
  flag_values = _defined(train.define_flags)
  flag_values(['train.py', '--batch_size=20', '--binarize=dynamic'])
  step = settings.fill(training.StepSettings, flag_values)
  assert step == training.StepSettings(batch_size=20, binarize='dynamic')
