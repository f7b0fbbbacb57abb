"""What users type and see: the ``%parakit`` magics, the panel, the ``parakit`` command, the
demo and its report, and the option groups they share. Nothing below imports from here."""
