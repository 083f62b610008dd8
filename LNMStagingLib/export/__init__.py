"""Exports of predictions to formats hospital systems read (DICOM SEG and SR)."""
