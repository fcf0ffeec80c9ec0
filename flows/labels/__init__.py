"""The labeling loop: a Label Studio server for the project, confirmed defects pushed as pre-annotated tasks,
labelers' boxes pulled back into a store that the detector dataset is built from."""
