"""The HTTP edge: middlewares, authentication, routes and views."""
