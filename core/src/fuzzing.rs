//! Bodies of the fuzz targets, as plain functions so they also run as ordinary tests.
