"""Model families, one per file. The registry is conf/model/*.yaml; there is no name table here."""
