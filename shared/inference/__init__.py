"""The hand pipeline (detect -> crop -> landmarks/gesture -> track), its backends and I/O.

Import from the submodules (`shared.inference.pipeline`, `.backends`, `.io`; drawing: `shared.drawing`);
nothing heavy is imported here, so `import shared.inference` costs nothing.
"""
