import os
import os.path as osp
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop

HERE = osp.dirname(osp.abspath(__file__))


def read_requirements(name):
    """Requirement lines of requirements/NAME.txt, without comments and blank lines."""
    with open(osp.join(HERE, 'requirements', f'{name}.txt')) as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line]


def read_module(name):
    """The globals of ravlt_dense/NAME.py, read without importing the package."""
    scope = {'__name__': f'ravlt_dense.{name}'}
    with open(osp.join(HERE, 'ravlt_dense', f'{name}.py')) as f:
        exec(f.read(), scope)
    return scope


# What a wheel carries in ravlt_dense/.mim/, as mmdet and mmseg carry theirs: zoo names and
# `mim` then find configs, tools and demos without a clone (ravlt_dense/zoo.py looks there first).
MIM_FILES = ('configs', 'tools', 'demo', 'model-index.yml')


def link_mim_files():
    """Link the clone's MIM_FILES into ravlt_dense/.mim (an editable install), where `mim`
    looks for a package's model-index.yml, configs and tools."""
    mim = osp.join(HERE, 'ravlt_dense', '.mim')
    os.makedirs(mim, exist_ok=True)
    for name in MIM_FILES:
        link = osp.join(mim, name)
        if osp.islink(link) or osp.isfile(link):
            os.remove(link)
        elif osp.isdir(link):
            shutil.rmtree(link)
        os.symlink(osp.join('..', '..', name), link)


class BuildWithMim(build_py):
    """build_py that also copies MIM_FILES into the built package's .mim folder; an editable
    install links them there instead, as mmdet's setup.py does in develop mode, so that `mim`
    finds the clone's zoo, configs and tools."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):  # a PEP 660 editable install
            link_mim_files()
            return
        mim = osp.join(self.build_lib, 'ravlt_dense', '.mim')
        for name in MIM_FILES:
            src, dst = osp.join(HERE, name), osp.join(mim, name)
            if osp.isdir(src):
                shutil.copytree(src, dst, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            else:
                self.copy_file(src, dst)


class DevelopWithMim(develop):
    """`pip install -e .` through setup.py develop: the clone's MIM_FILES linked into .mim."""

    def run(self):
        super().run()
        link_mim_files()


def read_readme():
    with open(osp.join(HERE, 'README.md'), encoding='utf-8') as f:
        return f.read()


extras = {name: read_requirements(name)
          for name in ('tests', 'export', 'deploy', 'analysis', 'demo')
          if osp.exists(osp.join(HERE, 'requirements', f'{name}.txt'))}
extras['all'] = sorted({req for reqs in extras.values() for req in reqs})
# The OpenMMLab packages come from one of two stacks whose distributions share import names
# (mmcv vs onedl-mmcv, ...): install_requires names neither, or pip would install upstream mmcv
# over the fork's; `import ravlt_dense` checks them (ravlt_dense/stack.py, which also gives
# these extras: `pip install "ravlt_dense[upstream]"` or `"ravlt_dense[onedl]"`).
stack = read_module('stack')
extras.update({name: stack['extra_requirements'](name) for name in stack['STACKS']})

setup(
    name='ravlt_dense',
    version=read_module('version')['__version__'],
    description='RAVLT (Rank-Augmented Vision Linear Transformer) backbones for mmdet 3.x and '
                'mmseg 1.x',
    long_description=read_readme(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['ravlt_dense', 'ravlt_dense.*']),
    include_package_data=True,
    cmdclass={'build_py': BuildWithMim, 'develop': DevelopWithMim},
    python_requires='>=3.8',
    install_requires=read_requirements('runtime'),
    extras_require=extras,
    classifiers=[
        'License :: OSI Approved :: Apache Software License',
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
