"""Protocol adapters: routes + a codec + one error-mapping table each."""
