"""The hand pipeline (detect -> crop -> landmarks/gesture -> track), its backends, drawing and I/O.

Import from the submodules (`shared.inference.pipeline`, `.backends`, `.drawing`, `.io`);
nothing heavy is imported here, so `import shared.inference` costs nothing.
"""
