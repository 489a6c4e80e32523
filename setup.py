from setuptools import find_packages, setup

setup(
    name='ravlt_dense',
    version='0.1.0',
    description='RAVLT (Rank-Augmented Vision Linear Transformer) backbones for mmdet 3.x and mmseg 1.x',
    packages=find_packages(include=['ravlt_dense', 'ravlt_dense.*']),
    python_requires='>=3.9',
    # The stack is pinned in requirements/stack.txt and installed by tools/setup_env.sh.
    install_requires=[],
    license='Apache-2.0',
)
