"""What a run leaves behind: results, the report, plots, progress lines, the config reference, model export."""
