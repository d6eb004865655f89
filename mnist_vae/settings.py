"""One way from flags to settings, for every entry point.

A settings type is a namedtuple whose fields are named as the flags that fill
it and whose defaults are those flags' defaults (the flags take theirs from
it, so the library code, the bench and the tests know the defaults without
parsing a command line). An entry point fills each of its settings types
with `fill` and declares the flags that fill none (with why); `check`, run
when the program starts, makes a field with no flag, or a flag with no field
and no declared use, an error that names them: a flag renamed on one side
only can no longer fall back silently to a default of its own.
"""

import collections

# TensorFlow's thread pools, the same flags for every entry point that runs a
# session (0: TensorFlow picks).
Threads = collections.namedtuple(
    'Threads', ['intra_op_threads', 'inter_op_threads'], defaults=(0, 0))


class SettingsError(Exception):
  """The flags and the settings types of an entry point do not match."""


def default(settings_type, field):
  """The default of `field` of `settings_type` (for its flag's definition)."""
  return settings_type._field_defaults[field]


def check(program, flag_names, settings_types, other_flags):
  """Raises SettingsError unless every field of `settings_types` has a flag
  in `flag_names` and every flag there is a field or in `other_flags`.

  Args:
    program: the entry point's name, for the message.
    flag_names: the flags the entry point defines.
    settings_types: the namedtuple types its flags fill.
    other_flags: {flag name: what it is for} of the flags that fill none.
  """
  fields = {field for settings_type in settings_types for field in settings_type._fields}
  without_flag = sorted(fields - set(flag_names))
  without_field = sorted(set(flag_names) - fields - set(other_flags))
  problems = []
  if without_flag:
    problems.append('fields with no flag: %s' % ', '.join(without_flag))
  if without_field:
    problems.append('flags that fill no settings: %s'
                    % ', '.join('--' + name for name in without_field))
  if problems:
    raise SettingsError('%s: %s' % (program, '; '.join(problems)))


def fill(settings_type, flag_values):
  """A `settings_type` of the parsed flags of the same names."""
  return settings_type(**{field: flag_values[field].value for field in settings_type._fields})
