"""The reproduction report (scripts/reproduce.sh): not part of the installed
package. Run as `python -m reporting.report` from the repository root."""
