"""The bundled example models and the code that trains them."""
